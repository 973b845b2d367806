"""Anthropic Messages requests turned into OpenAI Chat Completions requests.

Pure functions over decoded JSON: no I/O, no configuration parsing, no
third-party imports.  The proxy calls :func:`to_chat_completions` with the
client's ``/v1/messages`` body and the provider's :class:`OpenAIOptions`, sends
the dict it returns, and keeps the :class:`Names` to map tool names and tool
ids in the answer back (see ``openai_answer``).

The request is built from the fields this module knows, never by copying the
client's body: an Anthropic field a provider has never heard of
(``context_management``, ``mcp_servers``, ``service_tier``...) would get an
"Unrecognized request argument" 400.  The rules, and the provider quirks
behind each option, are those of the project's TRANSLATION.md.
"""

import copy
import hashlib
import json
import re
from dataclasses import dataclass

__all__ = [
    "OpenAIOptions", "Names", "to_chat_completions", "estimate_input_tokens",
    "reasoning_effort", "clean_schema", "compact_json",
]

#: What OpenAI accepts as a function name.
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
#: What Mistral accepts as a tool call id.
MISTRAL_TOOL_ID = re.compile(r"^[a-zA-Z0-9]{9}$")
#: OpenAI's limit on ``user``.
USER_MAX = 64
#: OpenAI rejects more stop sequences than this.
STOP_MAX = 4

#: A tool result's image cannot stay in the ``tool`` message (OpenAI rejects
#: images there); this text stands in for it and the image follows in the next
#: user message.
IMAGE_MOVED = "[image: attached to the next user message]"
#: Stands in for a PDF when ``OpenAIOptions.documents`` is "text", or for one given by URL.
DOCUMENT_PLACEHOLDER = "[a PDF document was attached here; this provider cannot read it]"
#: What the model says between the tool results and the user's text when a
#: provider forbids a ``user`` message right after a ``tool`` one (Mistral).
ASSISTANT_BRIDGE = "Tool results received."

_REASONING_DIALECTS = ("reasoning_effort", "openrouter", "chat_template_kwargs", "none")
_DROPPABLE = ("top_k", "stop", "temperature", "top_p", "user")
_TOOL_RESULT_THEN_USER = ("user", "append_to_tool", "assistant_bridge")


@dataclass
class OpenAIOptions:
    """One provider's quirks.  Every default is right for OpenAI itself.

    ``max_output_tokens``
        The provider's output cap: ``max_tokens`` above it is lowered to it
        (Claude Code asks for 32000 or more).  None: no cap.  There is never a
        floor: Claude Code probes with ``max_tokens: 1``.
    ``max_tokens_field``
        The field that carries ``max_tokens``: "max_tokens", or
        "max_completion_tokens" for OpenAI's o-series and gpt-5.
    ``drop_params``
        Parameters never sent, any of "top_k", "stop", "temperature",
        "top_p", "user".  OpenAI and Azure reject ``top_k``; some reasoning
        models reject ``stop``, ``temperature`` and ``top_p``.
    ``clean_schema``
        How tool schemas are cleaned: None (as given), "groq" (no
        ``$schema``) or "gemini" (everything Gemini's OpenAI endpoint rejects,
        see :func:`clean_schema`).
    ``reasoning``
        How extended thinking is asked for: "reasoning_effort" (OpenAI,
        DeepSeek, Groq...), "openrouter" (``reasoning: {"effort": ...}``),
        "chat_template_kwargs" (vLLM/Qwen: ``enable_thinking`` true or
        false), or "none" (never asked).  See :func:`reasoning_effort`.
    ``stream_usage``
        Send ``stream_options: {"include_usage": true}`` on streams; without
        it OpenAI reports no usage in a stream.
    ``tool_id_style``
        "keep" the client's tool ids, or "mistral9": map each to nine letters
        and digits (Mistral's rule), the same way every time, and back in
        answers (see :class:`Names`).
    ``replay_reasoning``
        Send the history's thinking text back as ``reasoning_content`` on
        assistant messages, and always (``""`` if there was none) on those with
        tool calls: DeepSeek's thinking mode and Kimi require it.  Otherwise
        thinking in the history is dropped.
    ``tool_result_then_user``
        What follows tool messages when the user's turn also has text:
        "user" (a user message, right for most), "append_to_tool" (the text
        goes at the end of the last tool message) or "assistant_bridge" (an
        assistant message saying :data:`ASSISTANT_BRIDGE` goes between), for
        Mistral's templates, which reject ``tool`` followed by ``user``.
    ``documents``
        PDF documents: "file" (OpenAI's ``{"type": "file"}`` part) or
        "text" (:data:`DOCUMENT_PLACEHOLDER`, for providers without file
        input).  Plain-text documents are always sent as text.
    """

    max_output_tokens: int | None = None
    max_tokens_field: str = "max_tokens"
    drop_params: tuple = ("top_k",)
    clean_schema: str | None = None
    reasoning: str = "reasoning_effort"
    stream_usage: bool = True
    tool_id_style: str = "keep"
    replay_reasoning: bool = False
    tool_result_then_user: str = "user"
    documents: str = "file"

    def __post_init__(self):
        """Reject a value no provider means (ValueError, one line naming the field)."""
        self.drop_params = tuple(self.drop_params)
        _check_choice("max_tokens_field", self.max_tokens_field, ("max_tokens", "max_completion_tokens"))
        _check_choice("clean_schema", self.clean_schema, (None, "groq", "gemini"))
        _check_choice("reasoning", self.reasoning, _REASONING_DIALECTS)
        _check_choice("tool_id_style", self.tool_id_style, ("keep", "mistral9"))
        _check_choice("tool_result_then_user", self.tool_result_then_user, _TOOL_RESULT_THEN_USER)
        _check_choice("documents", self.documents, ("file", "text"))
        for name in self.drop_params:
            _check_choice("drop_params", name, _DROPPABLE)
        if self.max_output_tokens is not None and (
                not isinstance(self.max_output_tokens, int) or self.max_output_tokens < 1):
            raise ValueError(f"max_output_tokens must be a positive integer, not {self.max_output_tokens!r}")


def _check_choice(field, value, allowed):
    if value not in allowed:
        names = ", ".join(repr(choice) for choice in allowed)
        raise ValueError(f"{field} must be one of {names}, not {value!r}")


class Names:
    """The renamings of one request, so its answer can be mapped back.

    Tool names that OpenAI would reject (longer than 64 characters, or with
    characters outside ``[a-zA-Z0-9_-]``) are shortened deterministically:
    the first 55 valid characters, ``_``, and 8 hex digits of a SHA-256 of the
    original.  With ``tool_id_style="mistral9"`` tool ids that are not already
    nine letters and digits become nine base-62 characters of a SHA-256 of the
    original.  Both mappings are the same on every request, so a history's
    tool calls and results agree without the proxy keeping state, and both
    are remembered here for the way back.  A name or id the request never
    mapped is returned as it is.
    """

    def __init__(self, tool_id_style="keep"):
        self.tool_id_style = tool_id_style
        self._upstream_names, self._original_names = {}, {}
        self._upstream_ids, self._original_ids = {}, {}

    def upstream_name(self, name):
        """The name the provider sees for the client's tool ``name``."""
        if name in self._upstream_names:
            return self._upstream_names[name]
        short = name if TOOL_NAME.match(name) else _short_tool_name(name)
        self._upstream_names[name] = short
        self._original_names[short] = name
        return short

    def original_name(self, upstream):
        """The client's name for the provider's tool name ``upstream``."""
        return self._original_names.get(upstream, upstream)

    def upstream_id(self, tool_id):
        """The id the provider sees for the client's tool call id."""
        if self.tool_id_style == "keep":
            return tool_id
        if tool_id in self._upstream_ids:
            return self._upstream_ids[tool_id]
        mapped = tool_id if MISTRAL_TOOL_ID.match(tool_id) else _base62_digest(tool_id, 9)
        self._upstream_ids[tool_id] = mapped
        self._original_ids[mapped] = tool_id
        return mapped

    def original_id(self, upstream):
        """The client's id for the provider's tool call id ``upstream``."""
        return self._original_ids.get(upstream, upstream)


def _short_tool_name(name):
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    valid = re.sub(r"[^a-zA-Z0-9_-]", "_", name)[:55]
    return f"{valid}_{digest}"


_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _base62_digest(text, length):
    number = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest(), "big")
    digits = []
    for _ in range(length):
        number, digit = divmod(number, 62)
        digits.append(_BASE62[digit])
    return "".join(digits)


def compact_json(value):
    """JSON without spaces, non-ASCII kept as it is (as OpenAI writes ``arguments``)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# --- the request -------------------------------------------------------------------------


def to_chat_completions(body, model, options, stream):
    """The Chat Completions body for the Anthropic Messages ``body``.

    ``model`` is the provider's model name (the client's is not sent).
    Returns ``(request, names)``; ``names`` maps the answer's tool names and
    ids back.  ``body`` is not modified.  Only these fields can appear:
    ``model``, ``messages``, the max-tokens field, ``stop``, ``temperature``,
    ``top_p``, ``top_k``, ``user``, ``stream``, ``stream_options``, ``tools``,
    ``tool_choice``, ``parallel_tool_calls`` and the reasoning field of
    ``options.reasoning``.
    """
    names = Names(options.tool_id_style)
    request = {"model": model, "messages": _system(body.get("system")) + _messages(body, options, names)}
    _max_tokens(request, body, options)
    _sampling(request, body, options)
    if stream:
        request["stream"] = True
        if options.stream_usage:
            request["stream_options"] = {"include_usage": True}
    _tools(request, body, options, names)
    _reasoning(request, body.get("thinking"), body.get("output_config"), options.reasoning)
    return request, names


def _max_tokens(request, body, options):
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        return
    if options.max_output_tokens is not None:
        max_tokens = min(max_tokens, options.max_output_tokens)
    request[options.max_tokens_field] = max_tokens


def _sampling(request, body, options):
    dropped = options.drop_params
    stops = body.get("stop_sequences")
    if "stop" not in dropped and isinstance(stops, list) and stops:
        request["stop"] = [stop for stop in stops if isinstance(stop, str)][:STOP_MAX]
    for name in ("temperature", "top_p", "top_k"):
        if name not in dropped and isinstance(body.get(name), (int, float)) \
                and not isinstance(body.get(name), bool):
            request[name] = body[name]
    user = _user(body.get("metadata"))
    if "user" not in dropped and user:
        request["user"] = user


def _user(metadata):
    """``metadata.user_id``, or its SHA-256 hex (64 characters) when longer than OpenAI's 64."""
    user_id = metadata.get("user_id") if isinstance(metadata, dict) else None
    if not isinstance(user_id, str) or not user_id:
        return None
    if len(user_id) <= USER_MAX:
        return user_id
    return hashlib.sha256(user_id.encode("utf-8")).hexdigest()


# --- system and messages -----------------------------------------------------------------


def _system(system):
    """One system message first: a string, or the text blocks joined by a blank line."""
    if isinstance(system, str):
        text = system
    elif isinstance(system, list):
        text = "\n\n".join(block["text"] for block in system
                           if _is_block(block, "text") and isinstance(block.get("text"), str) and block["text"])
    else:
        text = ""
    return [{"role": "system", "content": text}] if text else []


def _is_block(block, kind):
    return isinstance(block, dict) and block.get("type") == kind


def _blocks(content):
    """A message's content as a block list (a string is one text block)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [block for block in content if isinstance(block, dict)] if isinstance(content, list) else []


def _messages(body, options, names):
    out = []
    tool_call_order = []  # ids of the last assistant message's tool calls, in order
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        blocks = _blocks(message.get("content"))
        if message.get("role") == "assistant":
            assistant = _assistant_message(blocks, options, names)
            if assistant:
                out.append(assistant)
                tool_call_order = [call["id"] for call in assistant.get("tool_calls", [])]
        else:
            out.extend(_user_messages(blocks, tool_call_order, options, names))
            tool_call_order = []
    return out


def _assistant_message(blocks, options, names):
    """The assistant message for ``blocks``, or None when nothing is left of it.

    Text blocks are joined by a blank line; each ``tool_use`` is a tool call;
    thinking is dropped, or replayed as ``reasoning_content`` when the provider
    requires it; server tool blocks are dropped.  A message with tool calls
    and no text has ``content: null`` (DeepSeek rejects ``""``).
    """
    texts = [block["text"] for block in blocks
             if _is_block(block, "text") and isinstance(block.get("text"), str) and block["text"]]
    thinking = [block["thinking"] for block in blocks
                if _is_block(block, "thinking") and isinstance(block.get("thinking"), str) and block["thinking"]]
    calls = [_tool_call(block, names) for block in blocks if _is_block(block, "tool_use")]
    if not texts and not calls:
        return None
    message = {"role": "assistant", "content": "\n\n".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    if options.replay_reasoning and (thinking or calls):
        message["reasoning_content"] = "\n\n".join(thinking)
    return message


def _tool_call(block, names):
    tool_input = block.get("input")
    return {
        "id": names.upstream_id(str(block.get("id") or "")),
        "type": "function",
        "function": {
            "name": names.upstream_name(str(block.get("name") or "")),
            "arguments": compact_json(tool_input if tool_input else {}),
        },
    }


def _user_messages(blocks, tool_call_order, options, names):
    """The messages for one user turn: its tool results first, then the rest.

    One ``tool`` message per tool_use id, in the order of the preceding
    assistant's tool calls; then one user message with the remaining text,
    images and documents, after the images moved out of tool results.  Text
    between tool calls and their results would get OpenAI's 400 ("role 'tool'
    must be a response to a preceding message with 'tool_calls'"), and it is
    never dropped (Claude Code puts its ``<system-reminder>`` there).
    """
    results, moved_images = _tool_results(blocks, tool_call_order, names)
    parts = moved_images + [part for block in blocks if not _is_block(block, "tool_result")
                            for part in _user_parts(block, options)]
    tools = [{"role": "tool", "tool_call_id": tool_id, "content": text} for tool_id, text in results.items()]
    if not parts:
        return tools
    if tools and options.tool_result_then_user == "append_to_tool":
        texts = [part["text"] for part in parts if part["type"] == "text"]
        parts = [part for part in parts if part["type"] != "text"]
        if texts:
            tools[-1]["content"] = "\n\n".join([tools[-1]["content"]] + texts) if tools[-1]["content"] \
                else "\n\n".join(texts)
        if not parts:
            return tools
        return tools + [{"role": "assistant", "content": ASSISTANT_BRIDGE}, _user_message(parts)]
    if tools and options.tool_result_then_user == "assistant_bridge":
        return tools + [{"role": "assistant", "content": ASSISTANT_BRIDGE}, _user_message(parts)]
    return tools + [_user_message(parts)]


def _user_message(parts):
    """A user message: a plain string when it is only text (every provider takes that)."""
    if all(part["type"] == "text" for part in parts):
        return {"role": "user", "content": "\n\n".join(part["text"] for part in parts)}
    return {"role": "user", "content": parts}


def _tool_results(blocks, tool_call_order, names):
    """``({upstream tool id: content}, image parts moved out)`` for the turn's tool_result blocks.

    Results for the same id are merged into one (a second ``tool`` message for
    an id gets "each tool_use must have a single result").
    """
    found, images = {}, []
    for block in blocks:
        if not _is_block(block, "tool_result"):
            continue
        tool_id = names.upstream_id(str(block.get("tool_use_id") or ""))
        text, block_images = _tool_result_content(block)
        images.extend(block_images)
        found[tool_id] = f"{found[tool_id]}\n{text}" if tool_id in found else text
    position = {tool_id: at for at, tool_id in enumerate(tool_call_order)}
    ordered = sorted(found, key=lambda tool_id: position.get(tool_id, len(position)))
    return {tool_id: found[tool_id] for tool_id in ordered}, images


def _tool_result_content(block):
    """``(text, image parts)`` of one tool_result: text items joined by a newline."""
    content = block.get("content")
    texts, images = [], []
    if isinstance(content, str):
        texts.append(content)
    else:
        for item in _blocks(content):
            if _is_block(item, "text") and isinstance(item.get("text"), str):
                texts.append(item["text"])
            elif _is_block(item, "image") and _image_part(item):
                texts.append(IMAGE_MOVED)
                images.append(_image_part(item))
            elif _is_block(item, "document"):
                texts.extend(part["text"] for part in _document_parts(item, "text"))
    text = "\n".join(texts)
    if block.get("is_error") is True:
        text = f"Error: {text}"
    return text, images


def _user_parts(block, options):
    """Chat Completions content parts for one user block (none for an empty or unknown one)."""
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        return [{"type": "text", "text": text}] if isinstance(text, str) and text else []
    if kind == "image":
        part = _image_part(block)
        return [part] if part else []
    if kind == "document":
        return _document_parts(block, options.documents)
    return []


def _image_part(block):
    source = block.get("source")
    if not isinstance(source, dict):
        return None
    if source.get("type") == "base64" and source.get("data"):
        url = f"data:{source.get('media_type') or 'image/png'};base64,{source['data']}"
    elif source.get("type") == "url" and source.get("url"):
        url = source["url"]
    else:
        return None
    return {"type": "image_url", "image_url": {"url": url}}


def _document_parts(block, documents):
    """A document: PDFs as a file part (or a placeholder), text documents as text."""
    source = block.get("source") if isinstance(block.get("source"), dict) else {}
    kind = source.get("type")
    title = block.get("title") if isinstance(block.get("title"), str) else ""
    if kind == "text" and isinstance(source.get("data"), str):
        text = f"{title}\n\n{source['data']}" if title else source["data"]
        return [{"type": "text", "text": text}] if text else []
    if kind == "content":
        texts = [item["text"] for item in _blocks(source.get("content"))
                 if _is_block(item, "text") and isinstance(item.get("text"), str) and item["text"]]
        return [{"type": "text", "text": "\n\n".join(texts)}] if texts else []
    if kind == "base64" and source.get("data") and documents == "file":
        media_type = source.get("media_type") or "application/pdf"
        return [{"type": "file", "file": {"filename": title or "document.pdf",
                                          "file_data": f"data:{media_type};base64,{source['data']}"}}]
    if kind == "url" and isinstance(source.get("url"), str):
        return [{"type": "text", "text": f"{DOCUMENT_PLACEHOLDER} ({source['url']})"}]
    return [{"type": "text", "text": DOCUMENT_PLACEHOLDER}]


# --- tools -------------------------------------------------------------------------------


def _is_client_tool(tool):
    """A tool the client runs; Anthropic's server tools (``web_search_…``, ``bash_…``) have a versioned type."""
    return isinstance(tool, dict) and tool.get("type") in (None, "custom") and isinstance(tool.get("name"), str)


def _tools(request, body, options, names):
    tools = [_function(tool, options, names) for tool in body.get("tools") or [] if _is_client_tool(tool)]
    if not tools:
        return
    request["tools"] = tools
    choice = body.get("tool_choice")
    if not isinstance(choice, dict):
        return
    kind = choice.get("type")
    if kind in ("auto", "none"):
        request["tool_choice"] = kind
    elif kind == "any":
        request["tool_choice"] = "required"
    elif kind == "tool" and isinstance(choice.get("name"), str):
        request["tool_choice"] = {"type": "function", "function": {"name": names.upstream_name(choice["name"])}}
    if choice.get("disable_parallel_tool_use") is True:
        request["parallel_tool_calls"] = False


def _function(tool, options, names):
    schema = tool.get("input_schema")
    if not isinstance(schema, dict) or not schema:
        schema = {"type": "object", "properties": {}}
    function = {"name": names.upstream_name(tool["name"])}
    if isinstance(tool.get("description"), str) and tool["description"]:
        function["description"] = tool["description"]
    function["parameters"] = clean_schema(schema, options.clean_schema)
    return {"type": "function", "function": function}


#: Keywords Gemini's OpenAI endpoint rejects.
GEMINI_DROPPED = ("$schema", "additionalProperties", "default", "examples", "propertyNames",
                  "exclusiveMinimum", "exclusiveMaximum", "patternProperties")
GEMINI_FORMATS = ("enum", "date-time")

#: Keywords whose value is a schema, a list of schemas, or a map of names to schemas.
_SUBSCHEMA = ("items", "not", "additionalProperties", "contains", "if", "then", "else",
              "propertyNames", "additionalItems", "unevaluatedItems", "unevaluatedProperties")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


def clean_schema(schema, style):
    """A copy of the JSON schema ``schema`` that the provider accepts.

    ``style`` None: an unchanged copy.  "groq": without ``$schema``.
    "gemini": without the keywords in :data:`GEMINI_DROPPED`, without a
    ``format`` other than "enum" and "date-time", and with a type list
    reduced to its first non-null type, plus ``nullable: true`` when the list
    had "null".  Only schema keywords are touched: a property named
    ``default`` or ``format`` is kept, and so are ``enum``/``const`` values.
    """
    if style is None:
        return copy.deepcopy(schema)
    dropped = ("$schema",) if style == "groq" else GEMINI_DROPPED
    return _clean(schema, dropped, style == "gemini")


def _clean(schema, dropped, gemini):
    if isinstance(schema, list):  # "items" as a list of schemas
        return [_clean(item, dropped, gemini) for item in schema]
    if not isinstance(schema, dict):
        return copy.deepcopy(schema)  # true/false schemas
    out = {}
    for key, value in schema.items():
        if key in dropped:
            continue
        if gemini and key == "format" and value not in GEMINI_FORMATS:
            continue
        if key in _SUBSCHEMA:
            out[key] = _clean(value, dropped, gemini)
        elif key in _SUBSCHEMA_LISTS and isinstance(value, list):
            out[key] = [_clean(item, dropped, gemini) for item in value]
        elif key in _SUBSCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _clean(item, dropped, gemini) for name, item in value.items()}
        else:
            out[key] = copy.deepcopy(value)
    if gemini and isinstance(out.get("type"), list):
        types = [kind for kind in out["type"] if kind != "null"]
        if len(types) < len(out["type"]):
            out["nullable"] = True
        out["type"] = types[0] if types else "null"
    return out


# --- thinking ----------------------------------------------------------------------------

#: ``budget_tokens`` below this is "low" effort...
EFFORT_LOW_BELOW = 4096
#: ...below this "medium", from it "high".
EFFORT_MEDIUM_BELOW = 16384


def reasoning_effort(thinking, output_config=None):
    """The OpenAI ``reasoning_effort`` for Anthropic's ``thinking``, or None (not asked for).

    ``{"type": "enabled", "budget_tokens": B}``: B < 4096 → "low",
    B < 16384 → "medium", else "high".  The buckets follow Claude Code's
    thinking levels: "think" asks about 4000 tokens (low), "think hard" about
    10000 (medium), "ultrathink" and the default 31999 (high); Anthropic's
    minimum of 1024 is low.  ``{"type": "adaptive"}`` takes
    ``output_config.effort`` ("low", "medium", "high"; "max" is "high"),
    "medium" without one.  Disabled or absent thinking: None.
    """
    if not isinstance(thinking, dict):
        return None
    if thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int):
            return "medium"
        if budget < EFFORT_LOW_BELOW:
            return "low"
        return "medium" if budget < EFFORT_MEDIUM_BELOW else "high"
    if thinking.get("type") == "adaptive":
        effort = output_config.get("effort") if isinstance(output_config, dict) else None
        if effort in ("low", "medium", "high"):
            return effort
        return "high" if effort == "max" else "medium"
    return None


def _reasoning(request, thinking, output_config, dialect):
    effort = reasoning_effort(thinking, output_config)
    if dialect == "chat_template_kwargs":
        # Qwen3 thinks unless told not to: say so either way.
        request["chat_template_kwargs"] = {"enable_thinking": effort is not None}
    elif effort is None or dialect == "none":
        return
    elif dialect == "reasoning_effort":
        request["reasoning_effort"] = effort
    elif dialect == "openrouter":
        request["reasoning"] = {"effort": effort}


# --- counting ----------------------------------------------------------------------------

#: What one image or PDF counts for: Anthropic bills a large image about 1600
#: tokens and a PDF page 1500-3000; the page count is not known here.
IMAGE_TOKENS = 1600
DOCUMENT_TOKENS = 3000
#: Each message and each tool costs a few tokens of framing.
MESSAGE_OVERHEAD = 4
TOOL_OVERHEAD = 8


def estimate_input_tokens(body):
    """A local estimate of the input tokens of an Anthropic Messages ``body``.

    Counts the system prompt, every message's text, thinking, tool calls
    (name and input JSON) and tool results, and every tool's name,
    description and input schema (as JSON): a count without the tools
    undercounts Claude Code's requests by most of their size.  ASCII
    characters count a quarter of a token each and every other character a
    whole token (CJK text is about one token a character), plus
    :data:`MESSAGE_OVERHEAD` per message and :data:`TOOL_OVERHEAD` per tool;
    an image counts :data:`IMAGE_TOKENS` and a PDF :data:`DOCUMENT_TOKENS`.

    Expected error: within about 20% of a real tokenizer for English prose,
    code and JSON schemas (OpenAI's and Anthropic's tokenizers themselves
    differ by 10-20%); images and PDFs can be off by a factor of a few.
    It is an estimate for ``count_tokens`` and for ``message_start``, never a
    bill.
    """
    counter = _Counter()
    counter.add_text(body.get("system") if isinstance(body.get("system"), str) else "")
    for block in _blocks(body.get("system")) if isinstance(body.get("system"), list) else []:
        counter.add_block(block)
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            counter.tokens += MESSAGE_OVERHEAD
            for block in _blocks(message.get("content")):
                counter.add_block(block)
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            counter.tokens += TOOL_OVERHEAD
            counter.add_text(tool.get("name"))
            counter.add_text(tool.get("description"))
            if tool.get("input_schema") is not None:
                counter.add_text(compact_json(tool["input_schema"]))
    return counter.total()


class _Counter:
    def __init__(self):
        self.ascii = self.other = self.tokens = 0

    def add_text(self, text):
        if not isinstance(text, str):
            return
        ascii_count = len(text.encode("ascii", "ignore"))
        self.ascii += ascii_count
        self.other += len(text) - ascii_count

    def add_block(self, block):
        kind = block.get("type")
        if kind == "image":
            self.tokens += IMAGE_TOKENS
        elif kind == "document":
            self._add_document(block)
        elif kind == "tool_use":
            self.add_text(block.get("name"))
            self.add_text(compact_json(block.get("input") or {}))
        elif kind == "tool_result":
            for item in _blocks(block.get("content")):
                self.add_block(item)
        else:
            for field in ("text", "thinking"):
                self.add_text(block.get(field))

    def _add_document(self, block):
        source = block.get("source") if isinstance(block.get("source"), dict) else {}
        if source.get("type") == "text":
            self.add_text(source.get("data"))
        elif source.get("type") == "content":
            for item in _blocks(source.get("content")):
                self.add_block(item)
        else:
            self.tokens += DOCUMENT_TOKENS

    def total(self):
        return self.tokens + -(-self.ascii // 4) + self.other
