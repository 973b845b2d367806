"""OpenAI Chat Completions answers turned into Anthropic Messages answers.

Pure translation, no I/O: a JSON answer (:func:`to_anthropic_message`), a
stream (:class:`StreamTranslator`, fed the provider's bytes as they arrive
and returning the Anthropic SSE bytes to write), an error answer
(:func:`translate_error`) and the model list (:func:`models_list`).  Tool
names and ids come back through the :class:`~.openai_request.Names` of the
request.  The rules are those of the project's TRANSLATION.md, sections 2-5.
"""

import json
import re
import secrets

from .openai_request import compact_json
from .sse import EventBuffer, error_frame, event_name_and_data, frame, split_events

__all__ = [
    "PROXY_SIGNATURE_PREFIX", "PROXY_SIGNATURE", "is_proxy_signature", "strip_proxy_thinking",
    "AnswerError", "to_anthropic_message", "StreamTranslator", "translate_error", "models_list",
    "stop_reason", "anthropic_usage", "tool_input",
]

#: Every thinking block made from a provider's reasoning is signed with this
#: prefix.  Such a signature means nothing to Anthropic ("Invalid signature"):
#: before a history goes to a real Anthropic provider, drop those blocks
#: (:func:`strip_proxy_thinking`).
PROXY_SIGNATURE_PREFIX = "claude-proxy:"
PROXY_SIGNATURE = PROXY_SIGNATURE_PREFIX + "reasoning-from-an-openai-compatible-provider"

#: The name given to a streamed tool call whose name never arrived: the client
#: answers "no such tool", which the model sees, rather than losing the call.
MISSING_TOOL_NAME = "missing_tool_name"

_TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
_FINISH_REASONS = {"stop": "end_turn", "length": "max_tokens", "content_filter": "refusal",
                   "tool_calls": "tool_use", "function_call": "tool_use"}
_TOOL_FINISHES = (None, "stop", "tool_calls", "function_call")


def is_proxy_signature(signature):
    """Whether ``signature`` is one this proxy made (a thinking block no Anthropic provider accepts)."""
    return isinstance(signature, str) and signature.startswith(PROXY_SIGNATURE_PREFIX)


def strip_proxy_thinking(messages):
    """``messages`` without the thinking blocks this proxy signed (a new list; the input is unchanged)."""
    out = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            kept = [block for block in content if not (
                isinstance(block, dict) and block.get("type") == "thinking"
                and is_proxy_signature(block.get("signature")))]
            if len(kept) != len(content):
                message = {**message, "content": kept}
        out.append(message)
    return out


class AnswerError(ValueError):
    """A 200 answer that holds no answer: an ``error`` object, or no choices."""


# --- pieces shared by JSON answers and streams ------------------------------------------


def stop_reason(finish_reason, has_tool_use):
    """Anthropic's stop_reason for an OpenAI ``finish_reason``; never None.

    With a tool_use in the answer, ``tool_calls``, ``function_call``,
    ``stop`` and a missing reason all mean ``tool_use`` (gpt-4o, Ollama and
    Gemini say "stop" after tool calls).  ``length`` → ``max_tokens``,
    ``content_filter`` → ``refusal``, anything else → ``end_turn`` (also
    ``tool_calls`` without a tool call, which the client could not act on).
    """
    if has_tool_use and finish_reason in _TOOL_FINISHES:
        return "tool_use"
    reason = _FINISH_REASONS.get(finish_reason, "end_turn")
    return "end_turn" if reason == "tool_use" else reason


def anthropic_usage(usage):
    """Anthropic's four usage figures for an OpenAI ``usage`` object (None or junk: zeros).

    ``cache_read_input_tokens`` is ``prompt_tokens_details.cached_tokens``
    (OpenAI), else ``prompt_cache_hit_tokens`` (DeepSeek), else a top-level
    ``cached_tokens`` (Moonshot); ``cache_creation_input_tokens`` is
    ``prompt_tokens_details.cache_write_tokens`` (OpenRouter).  Anthropic's
    ``input_tokens`` excludes both, so it is ``prompt_tokens`` minus them.
    """
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("prompt_tokens_details") if isinstance(usage.get("prompt_tokens_details"), dict) else {}
    read = _count(details.get("cached_tokens")) or _count(usage.get("prompt_cache_hit_tokens")) \
        or _count(usage.get("cached_tokens"))
    creation = _count(details.get("cache_write_tokens"))
    return {
        "input_tokens": max(_count(usage.get("prompt_tokens")) - read - creation, 0),
        "cache_creation_input_tokens": creation,
        "cache_read_input_tokens": read,
        "output_tokens": _count(usage.get("completion_tokens")),
    }


def _count(value):
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _chunk_usage(chunk):
    """The usage object of a chunk or answer, wherever the provider put it (Groq: ``x_groq.usage``)."""
    usage = chunk.get("usage")
    if not isinstance(usage, dict) and isinstance(chunk.get("x_groq"), dict):
        usage = chunk["x_groq"].get("usage")
    return usage if isinstance(usage, dict) and usage else None


def tool_input(arguments):
    """A tool call's ``arguments`` as the tool_use ``input`` object.

    ``""`` or None → ``{}``; JSON of an object → that object; an object
    already → itself; anything else (cut or broken JSON, a JSON array) →
    ``{"_raw_arguments": <the text>}``, so the failure is visible to the
    client and the model instead of becoming an empty call retried forever.
    """
    if isinstance(arguments, dict):
        return arguments
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    text = arguments if isinstance(arguments, str) else compact_json(arguments)
    try:
        value = json.loads(text)
    except ValueError:  # the model's JSON is broken or cut: show it as it is
        return {"_raw_arguments": text}
    return value if isinstance(value, dict) else {"_raw_arguments": text}


def _arguments_text(arguments):
    """Streamed arguments as text: objects stringified, anything else not a string is nothing."""
    if isinstance(arguments, str):
        return arguments
    if isinstance(arguments, (dict, list)):
        return compact_json(arguments)
    return ""


class _ToolIds:
    """Tool_use ids for one answer: the provider's, mapped back and made valid and unique."""

    def __init__(self, names):
        self._names = names
        self._used = set()

    def take(self, upstream_id):
        tool_id = self._names.original_id(upstream_id) if isinstance(upstream_id, str) and upstream_id else ""
        if tool_id and not _TOOL_ID.match(tool_id):
            tool_id = re.sub(r"[^a-zA-Z0-9_-]", "_", tool_id)  # Kimi: "functions.Bash:0"
        if not tool_id or tool_id in self._used:
            tool_id = "toolu_" + secrets.token_hex(12)
        self._used.add(tool_id)
        return tool_id


def _reasoning_text(message):
    """The reasoning of a message or delta: ``reasoning_content``, ``reasoning`` or ``reasoning_details`` text."""
    for field in ("reasoning_content", "reasoning"):
        if isinstance(message.get(field), str) and message[field]:
            return message[field]
    details = message.get("reasoning_details")
    if isinstance(details, list):
        return "".join(item["text"] for item in details
                       if isinstance(item, dict) and isinstance(item.get("text"), str))
    return ""


def _content_text(message):
    """The visible text of a message or delta: ``content`` (a string or text parts) and any ``refusal``."""
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(part.get("text") or "" for part in content
                          if isinstance(part, dict) and isinstance(part.get("text"), str))
    text = content if isinstance(content, str) else ""
    refusal = message.get("refusal")
    return text + refusal if isinstance(refusal, str) else text


def _tool_calls(message):
    """The message's tool call fragments, with a legacy ``function_call`` as one more."""
    calls = [call for call in message.get("tool_calls") or [] if isinstance(call, dict)] \
        if isinstance(message.get("tool_calls"), list) else []
    if isinstance(message.get("function_call"), dict):
        calls.append({"index": len(calls), "function": message["function_call"]})
    return calls


def _first_choice(chunk):
    """The choice with index 0 (the only one asked for), or None."""
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return None
    for choice in choices:
        if isinstance(choice, dict) and choice.get("index", 0) in (0, None):
            return choice
    return None


def _error_text(error):
    """A provider's in-band ``error`` value as one line."""
    if isinstance(error, dict):
        message = error.get("message") if isinstance(error.get("message"), str) else compact_json(error)
        raw = (error.get("metadata") or {}).get("raw") if isinstance(error.get("metadata"), dict) else None
        return f"{message}: {raw}" if isinstance(raw, str) and raw and raw not in message else message
    return error if isinstance(error, str) else compact_json(error)


def _message_id(chat_id):
    if isinstance(chat_id, str) and chat_id:
        return "msg_" + re.sub(r"[^a-zA-Z0-9_-]", "_", chat_id)
    return "msg_" + secrets.token_hex(12)


# --- a JSON answer -----------------------------------------------------------------------


def to_anthropic_message(chat, requested_model, names):
    """The Anthropic message for a Chat Completions JSON answer ``chat``.

    Content in Anthropic's order: a thinking block (the reasoning, signed
    :data:`PROXY_SIGNATURE`), a text block (none when empty), one tool_use
    per call (names and ids mapped back, ids made valid, input parsed as
    :func:`tool_input` says).  ``model`` is ``requested_model``, the name the
    client asked for.  ``stop_sequence`` is always present (null).

    Raises :class:`AnswerError` when ``chat`` holds an ``error`` or no choice.
    """
    if not isinstance(chat, dict):
        raise AnswerError("the provider's answer is not a JSON object")
    if chat.get("error"):
        raise AnswerError(_error_text(chat["error"]))
    choice = _first_choice(chat)
    if choice is None:
        raise AnswerError("the provider's answer has no choices")
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    content = []
    reasoning = _reasoning_text(message)
    if reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": PROXY_SIGNATURE})
    text = _content_text(message)
    if text:
        content.append({"type": "text", "text": text})
    ids = _ToolIds(names)
    for call in _tool_calls(message):
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        name = function.get("name") if isinstance(function.get("name"), str) and function["name"] else None
        content.append({"type": "tool_use", "id": ids.take(call.get("id")),
                        "name": names.original_name(name) if name else MISSING_TOOL_NAME,
                        "input": tool_input(function.get("arguments"))})
    has_tool_use = any(block["type"] == "tool_use" for block in content)
    return {
        "id": _message_id(chat.get("id")),
        "type": "message",
        "role": "assistant",
        "model": requested_model,
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason"), has_tool_use),
        "stop_sequence": None,
        "usage": anthropic_usage(_chunk_usage(chat)),
    }


# --- a stream ----------------------------------------------------------------------------

#: A text_delta frame as ``_frame`` makes it, for a block index and the text as JSON.
_TEXT_DELTA = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
               b'"delta":{"type":"text_delta","text":%s}}\n\n')
_TEXT_ONLY_DELTA = ({"content"}, {"role", "content"})


def _text_only(chunk):
    """The text of a chunk that holds nothing but text (one choice, index 0,
    no finish_reason, a delta of ``content`` and perhaps ``role``, no usage),
    else None: such a chunk only adds to the open text block."""
    choices = chunk.get("choices")
    if type(choices) is not list or len(choices) != 1 or chunk.get("usage") is not None or "x_groq" in chunk:
        return None
    choice = choices[0]
    if type(choice) is not dict or choice.get("finish_reason") is not None or choice.get("index", 0) not in (0, None):
        return None
    delta = choice.get("delta")
    if type(delta) is not dict or delta.keys() not in _TEXT_ONLY_DELTA:
        return None
    text = delta["content"]
    return text if type(text) is str else None

#: An upstream event longer than this without its blank line is a broken stream.
MAX_EVENT_BYTES = 16 * 1024 * 1024
CUT_MESSAGE = "The provider's stream ended before the answer was complete."


class _ToolCall:
    """One streamed tool call: what has arrived, and what of it has gone out."""

    def __init__(self, upstream_id):
        self.upstream_id = upstream_id
        self.name = None
        self.arguments = ""    # everything received, re-sends counted once
        self.sent = 0          # how much of ``arguments`` is out
        self.index = None      # its content block, once started

    def add(self, arguments):
        """Take a fragment; a cumulative re-send (what arrived, and more) adds only the new part."""
        if not arguments:
            return
        if self.arguments and arguments.startswith(self.arguments):
            self.arguments = arguments  # DeepSeek and others re-send everything so far
        else:
            self.arguments += arguments

    def is_complete(self):
        try:
            json.loads(self.arguments)
        except ValueError:  # not (yet) a whole JSON value
            return False
        return True


class StreamTranslator:
    """One Chat Completions stream turned into an Anthropic Messages stream.

    Call :meth:`start` when the provider's 200 arrives (``message_start``,
    with ``usage.input_tokens`` = ``input_tokens_estimate``, then ``ping``),
    :meth:`feed` with the provider's bytes as they arrive, split anywhere,
    and :meth:`finish` at the provider's EOF; write what each returns to the
    client at once.  Every complete upstream event is translated when it
    arrives; only ``message_delta`` is held once ``finish_reason`` is seen,
    because OpenAI sends the usage after it (in a ``choices: []`` chunk).

    The Anthropic stream it writes: one content block open at a time,
    indexes 0, 1, 2... in the order of the final content; thinking blocks
    end with a ``signature_delta`` of :data:`PROXY_SIGNATURE`; a tool_use
    block gets its arguments as ``input_json_delta`` as they arrive (``"{}"``
    if none came).  It ends with ``message_delta`` (stop reason and usage) and
    ``message_stop`` after a ``finish_reason`` or ``[DONE]``; with an
    ``event: error`` frame after an in-band error (``{"error": ...}`` or
    OpenRouter's ``finish_reason: "error"``) or a stream cut before either.
    After that, :meth:`feed` and :meth:`finish` return ``b""``.  ``[DONE]`` is
    never written.

    Attributes the proxy books: :attr:`usage` (Anthropic's four figures:
    the provider's when it sent usage, else the input estimate and an output
    estimate of a token per four characters written) and :attr:`error` (None,
    or why the stream ended in an error frame).

    Not translated: a tool call's fragments arriving after another block has
    started (no provider interleaves them; the block cannot be reopened), and
    two calls with the same arguments that share an index and have no ids
    (indistinguishable from a re-send).
    """

    def __init__(self, requested_model, names, input_tokens_estimate, message_id=None):
        self.model = requested_model
        self.names = names
        self.message_id = message_id or "msg_" + secrets.token_hex(12)
        self.estimate = max(int(input_tokens_estimate or 0), 0)
        self.usage = {"input_tokens": self.estimate, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0, "output_tokens": 0}
        self.error = None
        self._events = EventBuffer()
        self._provider_usage = False  # usage came from the provider, not estimates
        self._characters = 0          # written as text, thinking or arguments: the output estimate
        self._open = None             # ("thinking" | "text" | _ToolCall, block index)
        self._blocks = 0              # blocks started so far
        self._by_index, self._by_id, self._last_call = {}, {}, None
        self._pending = []            # calls waiting for their name
        self._ids = _ToolIds(names)
        self._has_tool_use = False
        self._stop_reason = None      # set once finish_reason is seen: message_delta is held
        self._ended = False

    # -- the interface --

    def start(self):
        """``message_start`` (no content, no stop reason, the input estimate) and a ``ping``."""
        message = {"id": self.message_id, "type": "message", "role": "assistant", "model": self.model,
                   "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": self.estimate, "cache_creation_input_tokens": 0,
                             "cache_read_input_tokens": 0, "output_tokens": 0}}
        return frame("message_start", {"type": "message_start", "message": message}) + self.keepalive()

    def keepalive(self):
        """A ``ping`` frame (write it during long upstream silences), or b"" once ended."""
        return b"" if self._ended else frame("ping", {"type": "ping"})

    def feed(self, data):
        """Translate the provider's bytes ``data``; returns the Anthropic SSE bytes to write now."""
        if self._ended:
            return b""
        self._events.feed(data)
        out = [self._event(event) for event in split_events(self._events.take_events())
               if not self._ended]
        if not self._ended and self._events.size > MAX_EVENT_BYTES:
            out.append(self._fail(f"the provider sent {MAX_EVENT_BYTES // (1024 * 1024)} MiB "
                                  "without an event boundary"))
        return b"".join(out)

    def finish(self):
        """The provider's stream ended: the end of the Anthropic stream, or an error frame if it was cut."""
        if self._ended:
            return b""
        out = [self._event(event) for event in split_events(self._events.take_all() + b"\n\n")]
        if self._ended:
            return b"".join(out)
        if self._stop_reason is None:
            return b"".join(out) + self._fail(CUT_MESSAGE)
        return b"".join(out) + self._end()

    # -- events --

    def _event(self, event):
        if self._ended:
            return b""
        name, data = event_name_and_data(event)
        data = data.strip()
        if data == "[DONE]":
            return self._done()
        try:
            chunk = json.loads(data) if data else None
        except ValueError:  # not JSON (a keep-alive word, a provider's banner): nothing to translate
            return b""
        if not isinstance(chunk, dict):
            return b""
        if chunk.get("error") or name == "error":
            return self._fail(_error_text(chunk.get("error") or chunk))
        return self._chunk(chunk)

    def _chunk(self, chunk):
        if self._open is not None and self._open[0] == "text" and self._stop_reason is None:
            text = _text_only(chunk)
            if text:  # the common chunk, more text for the open text block: what _text makes, made directly
                self._characters += len(text)
                return _TEXT_DELTA % (self._open[1], json.dumps(text, ensure_ascii=False).encode("utf-8"))
        usage = _chunk_usage(chunk)
        if usage:
            self._provider_usage = True
            self.usage = anthropic_usage(usage)
            if not _count(usage.get("prompt_tokens")):  # output figures only: keep the estimate
                self.usage["input_tokens"] = self.estimate
        choice = _first_choice(chunk)
        if choice is None or self._stop_reason is not None:
            return b""  # a usage-only chunk, or anything after finish_reason
        delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
        out = [self._thinking(_reasoning_text(delta)), self._text(_content_text(delta))]
        out.extend(self._tool_fragment(fragment) for fragment in _tool_calls(delta))
        finish_reason = choice.get("finish_reason")
        if finish_reason == "error":  # OpenRouter: the provider behind it failed mid-stream
            message = _error_text(chunk["error"]) if chunk.get("error") else \
                "The provider reported an error mid-stream (finish_reason: error)."
            return b"".join(out) + self._fail(message)
        if finish_reason:
            out.append(self._close_all())
            self._stop_reason = stop_reason(finish_reason, self._has_tool_use)
        return b"".join(out)

    def _done(self):
        """``[DONE]``: the end, inferring the stop reason if no finish_reason came."""
        out = b""
        if self._stop_reason is None:
            out = self._close_all()
            self._stop_reason = "tool_use" if self._has_tool_use else "end_turn"
        return out + self._end()

    def _end(self):
        self._ended = True
        if not self._provider_usage:
            self.usage["output_tokens"] = -(-self._characters // 4)
        delta = {"type": "message_delta", "delta": {"stop_reason": self._stop_reason, "stop_sequence": None},
                 "usage": dict(self.usage)}
        return frame("message_delta", delta) + frame("message_stop", {"type": "message_stop"})

    def _fail(self, message):
        self._ended = True
        self.error = message
        return error_frame("api_error", message)

    # -- blocks --

    def _thinking(self, text):
        if not text:
            return b""
        out = b"" if self._open_kind() == "thinking" else \
            self._close() + self._start({"type": "thinking", "thinking": "", "signature": ""}, "thinking")
        return out + self._delta({"type": "thinking_delta", "thinking": text}, len(text))

    def _text(self, text):
        if not text:
            return b""  # role-only and "" deltas never open a block
        out = b"" if self._open_kind() == "text" else self._close() + self._start({"type": "text", "text": ""}, "text")
        return out + self._delta({"type": "text_delta", "text": text}, len(text))

    def _tool_fragment(self, fragment):
        upstream_id = fragment.get("id") if isinstance(fragment.get("id"), str) and fragment["id"] else None
        function = fragment.get("function") if isinstance(fragment.get("function"), dict) else {}
        name = function.get("name") if isinstance(function.get("name"), str) and function["name"] else None
        arguments = _arguments_text(function.get("arguments"))
        index = fragment.get("index") if isinstance(fragment.get("index"), int) else None
        call = self._call_for(index, upstream_id, name, arguments)
        if upstream_id and not call.upstream_id:
            call.upstream_id = upstream_id
            self._by_id[upstream_id] = call
        if name and not call.name:
            call.name = name
        call.add(arguments)
        if call.index is None and call.name:
            return self._start_tool(call)
        if self._open is not None and self._open[0] is call:
            return self._send_arguments(call)
        return b""  # waiting for its name, or a late fragment of a closed block

    def _call_for(self, index, upstream_id, name, arguments):
        """The call a fragment belongs to: by index, else by id, else the last one; or a new one.

        A fragment starts a new call when its id differs from the slot's id
        (Gemini reuses index 0 for parallel calls), or when it brings a name
        and new arguments to a call whose arguments are already complete JSON.
        """
        if index is not None:
            call = self._by_index.get(index)
        elif upstream_id is not None:
            call = self._by_id.get(upstream_id)
        else:
            call = self._last_call
        if call is not None and not self._starts_new_call(call, upstream_id, name, arguments):
            return call
        call = _ToolCall(upstream_id)
        if index is not None:
            self._by_index[index] = call
        if upstream_id is not None:
            self._by_id[upstream_id] = call
        self._last_call = call
        self._pending.append(call)
        return call

    @staticmethod
    def _starts_new_call(call, upstream_id, name, arguments):
        if upstream_id and call.upstream_id:
            return upstream_id != call.upstream_id
        return bool(name and call.name and arguments and call.is_complete()
                    and not arguments.startswith(call.arguments))

    def _start_tool(self, call):
        self._pending.remove(call)
        self._has_tool_use = True
        block = {"type": "tool_use", "id": self._ids.take(call.upstream_id),
                 "name": self.names.original_name(call.name) if call.name != MISSING_TOOL_NAME else call.name,
                 "input": {}}
        return self._close() + self._start(block, call) + self._send_arguments(call)

    def _send_arguments(self, call):
        new = call.arguments[call.sent:]
        call.sent = len(call.arguments)
        return self._delta({"type": "input_json_delta", "partial_json": new}, len(new)) if new else b""

    def _open_kind(self):
        return self._open[0] if self._open else None

    def _start(self, block, kind):
        index = self._blocks
        self._blocks += 1
        self._open = (kind, index)
        if isinstance(kind, _ToolCall):
            kind.index = index
        return frame("content_block_start", {"type": "content_block_start", "index": index,
                                              "content_block": block})

    def _delta(self, delta, characters):
        self._characters += characters
        return frame("content_block_delta", {"type": "content_block_delta", "index": self._open[1],
                                              "delta": delta})

    def _close(self):
        """Close the open block: a thinking block gets its signature, a tool_use block its arguments."""
        if self._open is None:
            return b""
        kind, index = self._open
        out = b""
        if kind == "thinking":
            out = frame("content_block_delta", {"type": "content_block_delta", "index": index,
                                                 "delta": {"type": "signature_delta", "signature": PROXY_SIGNATURE}})
        elif isinstance(kind, _ToolCall) and kind.sent == 0:
            out = self._delta({"type": "input_json_delta", "partial_json": "{}"}, 2)
        self._open = None
        return out + frame("content_block_stop", {"type": "content_block_stop", "index": index})

    def _close_all(self):
        """Close the open block, then give calls whose name never came a block of their own."""
        out = [self._close()]
        for call in list(self._pending):
            if call.arguments or call.upstream_id:
                call.name = MISSING_TOOL_NAME
                out.append(self._start_tool(call) + self._close())
        self._pending = []
        return b"".join(out)


# --- errors ------------------------------------------------------------------------------

_STATUS_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
                 403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                 429: "rate_limit_error", 504: "timeout_error", 529: "overloaded_error"}

_OVERFLOW_CODES = ("context_length_exceeded", "string_above_max_length", "model_context_window_exceeded")
_OVERFLOW_WORDS = re.compile(
    r"context[ _]length|context window|maximum context|prompt is too long|input token count"
    r"|too many (?:input )?tokens|input tokens? exceeds?"
    r"|exceeds? the (?:model's )?(?:maximum|max) (?:context|input)", re.IGNORECASE)
_LIMIT = [re.compile(pattern, re.IGNORECASE) for pattern in (
    r"maximum context length is (\d+)",
    r"maximum number of tokens allowed \((\d+)\)",
    r"configured limit of (\d+)",
    r"context (?:length|window)(?: size)? (?:of|is) (\d+)",
    r"(\d+) maximum",
    r"limit (?:of|is) (\d+) tokens",
)]
_PROMPT = [re.compile(pattern, re.IGNORECASE) for pattern in (
    r"\((\d+) in the messages",
    r"input token count \((\d+)\)",
    r"(?:resulted in|has|contains|requested) (\d+) (?:input |prompt )tokens",
    r"messages resulted in (\d+) tokens",
    r"prompt is too long: (\d+) tokens",
    r"prompt (?:contains|has) (\d+) tokens",
)]
_QUOTA = re.compile(r"insufficient_quota|exceeded your current quota|insufficient (?:credits|balance)",
                    re.IGNORECASE)


def translate_error(status, body, input_tokens_estimate=None):
    """``(status, body)`` of the Anthropic error for a provider's error answer.

    The body is ``{"type": "error", "error": {"type": T, "message": M}}``,
    M the provider's message (OpenAI's ``error.message``, Google's
    ``[{"error": {...}}]``, ``detail``/``message`` fields, or plain text;
    an HTML page is never passed on).  Statuses, as TRANSLATION.md §4:
    400 and 422 → 400 ``invalid_request_error``; 401, 403, 404, 413 keep
    their Anthropic type; 429 → ``rate_limit_error``; 503, 529 and a 5xx
    saying "overloaded" → 529 ``overloaded_error``; 504 → ``timeout_error``
    (Anthropic's meaning); other 5xx keep their status as ``api_error``;
    other 4xx keep their status as ``invalid_request_error``.

    Choices: a 429 for an exhausted quota (``insufficient_quota``, "exceeded
    your current quota", OpenRouter's 402 "insufficient credits") becomes
    402 ``billing_error``: waiting does not help, and the SDKs and Claude
    Code retry a 429 but not a 402.

    A context overflow (``context_length_exceeded``, vLLM's "maximum
    context length is X tokens", Gemini's "input token count (N) exceeds")
    becomes 400 ``invalid_request_error`` worded like Anthropic's
    ``prompt is too long: N tokens > X maximum``, the original appended,
    so Claude Code compacts.  N is the provider's figure, else
    ``input_tokens_estimate``.  When the provider says the prompt itself
    fits and only the requested output does not, it is not called a long
    prompt (compacting would not help): the message says to cap the output.
    """
    message, code = _error_message(status, body)
    overflow = _context_overflow(status, message, code, input_tokens_estimate)
    if overflow:
        return 400, _error_body("invalid_request_error", overflow)
    out_status, error_type = _status_and_type(status, message, code)
    return out_status, _error_body(error_type, message)


def _error_body(error_type, message):
    return json.dumps({"type": "error", "error": {"type": error_type, "message": message}}).encode("utf-8")


def _error_message(status, body):
    """``(message, code)`` from an error body of any shape."""
    raw = body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else str(body or "")
    try:
        data = json.loads(raw)
    except ValueError:  # plain text or an HTML page
        return _plain_message(status, raw), None
    if isinstance(data, list) and data:
        data = data[0]  # Google: [{"error": {...}}]
    if not isinstance(data, dict):
        return _plain_message(status, raw), None
    error = data.get("error")
    if isinstance(error, dict):
        code = next((error[key] for key in ("code", "type", "status") if isinstance(error.get(key), str)), None)
        return _error_text(error), code
    if isinstance(error, str) and error:
        return error, data.get("code") if isinstance(data.get("code"), str) else None
    for key in ("message", "detail"):
        if data.get(key):
            return (data[key] if isinstance(data[key], str) else compact_json(data[key])), None
    return _plain_message(status, raw), None


def _plain_message(status, text):
    text = text.strip()
    if not text or text.startswith("<"):
        return f"The provider answered HTTP {status}."
    return text[:2000]


def _context_overflow(status, message, code, input_tokens_estimate):
    """Anthropic's "prompt is too long" wording for a context overflow, or None if it is not one."""
    if status not in (400, 413, 422) or not (code in _OVERFLOW_CODES or _OVERFLOW_WORDS.search(message)):
        return None
    limit = _first_number(_LIMIT, message)
    prompt = _first_number(_PROMPT, message)
    if prompt is not None and limit is not None and prompt < limit:
        return (f"The prompt ({prompt} tokens) fits the context ({limit} tokens) but not with the output asked "
                f"for: lower max_output_tokens for this provider. {message}")
    prompt = prompt if prompt is not None else input_tokens_estimate
    if prompt is not None and limit is not None:
        return f"prompt is too long: {prompt} tokens > {limit} maximum ({message})"
    return f"prompt is too long ({message})"


def _first_number(patterns, text):
    for pattern in patterns:
        match = pattern.search(text)
        if match:
            return int(match.group(1))
    return None


def _status_and_type(status, message, code):
    if status in (400, 422):
        return 400, "invalid_request_error"
    if status in (402, 429) and (code == "insufficient_quota" or _QUOTA.search(message)):
        return 402, "billing_error"
    if status in (503, 529) or (status >= 500 and "overloaded" in message.lower()):
        return 529, "overloaded_error"
    if status in _STATUS_TYPES:
        return status, _STATUS_TYPES[status]
    return status, "api_error" if status >= 500 else "invalid_request_error"


# --- GET /v1/models ----------------------------------------------------------------------

#: Chat Completions providers do not say when a model was made: the epoch means "unknown".
UNKNOWN_CREATED_AT = "1970-01-01T00:00:00Z"


def models_list(model_names):
    """``GET /v1/models`` in Anthropic's shape, one entry per distinct name, in order."""
    names = list(dict.fromkeys(name for name in model_names if isinstance(name, str) and name))
    return {
        "data": [{"type": "model", "id": name, "display_name": name, "created_at": UNKNOWN_CREATED_AT}
                 for name in names],
        "has_more": False,
        "first_id": names[0] if names else None,
        "last_id": names[-1] if names else None,
    }
