"""Forwarding a request to an OpenAI-compatible provider (``"type": "openai"``).

The client speaks Anthropic's Messages API; the provider speaks Chat
Completions.  :func:`attempt` does for such a provider what
:meth:`forward.Forwarder._attempt` does for an Anthropic one, inside the
same failover loop and with the same commit point:

- ``POST /v1/messages`` is translated (:mod:`openai_request`) and sent to
  ``base_url`` + ``chat_path``.  A 429/5xx fails over exactly as from an
  Anthropic provider; its body, translated to Anthropic's error shape
  (:func:`openai_answer.translate_error`), is what the client gets if it
  was the last.  Another error status is passed back, translated.
- A stream commits once its first upstream event has arrived (an
  ``{"error": ...}`` there fails over, like Anthropic's ``event: error``);
  from then on :func:`relay_stream` translates each upstream read as it
  arrives and writes it at once.  A cut ends with an ``event: error``.
- A non-stream answer is read whole and translated before the commit point.
- ``POST /v1/messages/count_tokens`` is answered here with an estimate
  (:func:`openai_request.estimate_input_tokens`), ``GET /v1/models`` with
  the provider's model-map targets; nothing else of Anthropic's API exists
  at such a provider (404).
"""

import dataclasses
import json

from . import __version__
from .errors import UpstreamError
from .failover import retry_after_seconds
from .openai_answer import (
    AnswerError, StreamTranslator, models_list, to_anthropic_message, translate_error,
)
from .openai_request import estimate_input_tokens, to_chat_completions
from .relay import ClientGone, read_first_event
from .sse import first_event
from .upstream import key_headers

ANSWER_LIMIT = 64 * 1024 * 1024     # a non-stream answer is read whole, up to this
ERROR_BODY_LIMIT = 1024 * 1024
JSON_HEADERS = (("Content-Type", "application/json"),)
STREAM_HEADERS = (("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache"))
#: Provider answer headers worth passing on with a translated answer.
KEPT_HEADERS = frozenset({"retry-after", "retry-after-ms", "x-request-id", "request-id"})


@dataclasses.dataclass
class LocalAnswer:
    """An answer complete before the commit point: made here, or translated whole."""

    status: int
    headers: list
    body: bytes
    usage: dict = None  # Anthropic's usage figures, when it is a message


@dataclasses.dataclass
class TranslatedStream:
    """A provider's stream that has begun (``first`` read), to be translated as it goes on."""

    response: object
    translator: StreamTranslator
    first: bytes


def local_json(status, payload, usage=None):
    return LocalAnswer(status, list(JSON_HEADERS), json.dumps(payload).encode("utf-8"), usage)


def local_error(status, error_type, message):
    return local_json(status, {"type": "error", "error": {"type": error_type, "message": message}})


def attempt(forwarder, provider, ex):
    """Send ``ex`` to the OpenAI-type ``provider``.

    Returns a :class:`LocalAnswer` or a :class:`TranslatedStream` when the
    provider answers (or need not be asked), else the failure to fail over
    from (an :class:`UpstreamError` or a ``forward.FailedAnswer``), booked.
    """
    from .forward import FailedAnswer

    path = ex.api_path.split("?", 1)[0].rstrip("/")
    body = ex.parsed_body()
    if path in ("/v1/messages", "/v1/messages/count_tokens") and ex.method == "POST" \
            and not isinstance(body, dict):
        return local_error(400, "invalid_request_error", "The request body is not a JSON object.")
    if ex.method == "POST" and path == "/v1/messages/count_tokens":
        return local_json(200, {"input_tokens": estimate_input_tokens(body)})
    if ex.method == "GET" and path == "/v1/models":
        return local_json(200, models_list(list(provider.models.values())))
    if not (ex.method == "POST" and path == "/v1/messages"):
        return local_error(404, "not_found_error",
                           f"{ex.method} {path} is not available from the OpenAI-compatible provider "
                           f"{provider.name} (it answers /v1/messages and /v1/messages/count_tokens).")

    requested = body.get("model") if isinstance(body.get("model"), str) else ""
    stream = body.get("stream") is True
    chat, names = to_chat_completions(body, ex.target or provider.map_model(requested), provider.openai, stream)
    data = json.dumps(chat, ensure_ascii=False).encode("utf-8")
    estimate = estimate_input_tokens(body)
    try:
        response = forwarder.upstreams.send(provider, "POST", provider.base_path + provider.chat_path,
                                            request_headers(provider, len(data), stream, ex.key(provider)),
                                            data, ex.cancel)
        if response.status != 200:
            error_body = _read_error_body(response)
            status, translated = translate_error(response.status, error_body, estimate)
            headers = list(JSON_HEADERS) + _kept(response.headers)
            ex.note(provider, response.status)
            if response.status in forwarder.config.failover_statuses \
                    or forwarder.body_says_fail_over(error_body):
                forwarder.book_failure(provider, ex, response.status, _describe(status, translated),
                                       retry_after_seconds(response.headers))
                return FailedAnswer(status, response.reason, headers, translated, response.status)
            return LocalAnswer(status, headers, translated)
        if stream:
            first = read_first_event(response)
        else:
            answer = response.read_all(ANSWER_LIMIT)
    except UpstreamError as exc:
        return forwarder.book_unreachable(provider, ex, exc)

    if stream:
        error = first_chunk_error(first)
        if error is not None:
            response.close()
            status, translated = translate_error(502, json.dumps({"error": error}).encode(), estimate)
            ex.note(provider, "stream-error")
            forwarder.policy.record_failure(provider, f"stream began with an error: {_describe(status, translated)}",
                                            model=ex.model_key)
            return FailedAnswer(status, "Bad Gateway", list(JSON_HEADERS), translated)
        ex.note(provider, 200)
        return TranslatedStream(response, StreamTranslator(requested, names, estimate), first)
    try:
        message = to_anthropic_message(json.loads(answer), requested, names)
    except (ValueError, AnswerError) as exc:  # not JSON, or a 200 that holds no answer: its failure
        ex.note(provider, "bad-answer")
        translated = json.dumps({"type": "error", "error": {
            "type": "api_error", "message": f"The provider {provider.name} sent no usable answer: {exc}"}}).encode()
        forwarder.policy.record_failure(provider, f"unusable answer: {str(exc)[:200]}", model=ex.model_key)
        return FailedAnswer(502, "Bad Gateway", list(JSON_HEADERS), translated)
    ex.note(provider, 200)
    return local_json(200, message, message.get("usage"))


def request_headers(provider, length, stream, key=None):
    """The headers of a Chat Completions request: only what it needs (no ``anthropic-*``)."""
    headers = [("Host", provider.netloc), ("Content-Type", "application/json"),
               ("Accept", "text/event-stream" if stream else "application/json"),
               ("Accept-Encoding", "identity"), ("User-Agent", f"claude-proxy/{__version__}")]
    headers = [(name, value) for name, value in headers if name.lower() not in provider.header_names]
    headers.extend(provider.headers.items())
    headers.extend(key_headers(provider, key))
    headers.append(("Content-Length", str(length)))
    return headers


def first_chunk_error(first):
    """The ``error`` object if the stream's first event is an error chunk, else None."""
    _, data = first_event(first) or (None, "")
    try:
        chunk = json.loads(data)
    except ValueError:  # not JSON (a comment, [DONE]): not an error chunk
        return None
    return chunk.get("error") or None if isinstance(chunk, dict) else None


def relay_stream(started, writer, usage, cancel):
    """Translate and write the provider's stream as it arrives (past the commit point).

    Returns None when it ended well, or how it failed; either way the
    Anthropic stream has been ended properly (``message_stop``, or an
    ``event: error``).  Raises :class:`ClientGone` if the client leaves.
    """
    response, translator = started.response, started.translator
    try:
        writer.write(translator.start() + translator.feed(started.first))
        while True:
            try:
                data = response.read1()
            except UpstreamError as exc:
                if cancel.is_set():
                    raise ClientGone("client went away") from None
                writer.write(translator.finish())  # an error frame unless the answer was complete
                writer.end()
                return f"cut mid-stream ({exc.kind})" if translator.error else None
            if not data:
                if cancel.is_set():
                    raise ClientGone("client went away")
                writer.write(translator.finish())
                writer.end()
                return f"cut mid-stream ({translator.error})" if translator.error else None
            out = translator.feed(data)
            if out:
                writer.write(out)
    finally:
        usage.update(translator.usage)


def _read_error_body(response):
    try:
        return response.read_all(ERROR_BODY_LIMIT)
    except UpstreamError:  # its status is what matters; the body is a courtesy
        return b""


def _kept(headers):
    return [(name, value) for name, value in headers if name.lower() in KEPT_HEADERS]


def _describe(status, translated):
    try:
        error = json.loads(translated)["error"]
        return f"{status} {error['type']}: {error['message']}"[:300]
    except (ValueError, KeyError, TypeError):  # our own JSON; kept defensive for the log line
        return str(status)
