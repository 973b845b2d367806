"""Forwarding one request: try the planned providers until one answers, relay
that answer, and book the outcome.

The commit point: nothing reaches the client until a provider has answered
with something that is not a failover trigger (for a stream, its first
event; for a small non-stream answer, all of it).  Up to then every failure
is the provider's and the next one is tried; after it the provider is never
switched (see :mod:`relay` for how a stream that dies is ended).

:func:`classify` is the one place that decides what a provider's answer
means: ``ANSWERED`` (relay it), ``FAIL_OVER`` (book the failure, try the
next) or, for an answer that is neither a success nor a failover trigger
(400, 401, 404, ...), ``PASS_BACK``: relayed to the client unchanged,
byte for byte, since another provider would refuse the same request.

One exception to "unchanged": providers do echo the key they were sent in an
error message, so every error body that reaches the client (a pass-back, or
the last failover answer) has each configured key, of any provider, replaced
by its masked form (:func:`mask_keys`); nothing else in it changes, and its
Content-Length is recomputed.

The client side is anything with the few methods of :class:`ClientSide`
(the HTTP handler in :mod:`server`, or a recorder in the tests), so the
policy can be exercised without an HTTP handler.
"""

import dataclasses
import http
import json
import logging
import random
import time

from . import openai_forward
from .cancel import Cancel
from .config import mask_key
from .errors import UpstreamError
from .failover import describe_error, retry_after_seconds
from .logfile import printable
from .signatures import (
    SignatureBook, all_thinking_removed, foreign_thinking_removed, is_signature_rejection,
)
from .routing import STRATEGIES
from .relay import (
    ClientGone, Usage, is_event_stream, read_first_event, relay_body, relay_stream,
)
from .sse import first_event_error
from .upstream import model_first, rewrite_model, upstream_headers

log = logging.getLogger("claude_proxy")

RETRY_BACKOFF_CAP = 8.0        # seconds: the longest pause between same-provider retries
ERROR_BODY_LIMIT = 1024 * 1024  # an error answer's body is kept for the client up to this
MASKED_KEY_MIN = 8              # shorter "keys" are not searched for: they would mangle ordinary text
WHOLE_BODY_LIMIT = 256 * 1024   # a non-stream body up to this is read whole before the commit point
CHUNKED = object()              # a framing: Transfer-Encoding: chunked

ANSWERED, FAIL_OVER, PASS_BACK = "answered", "fail over", "pass back"
_NOT_ANSWERED = object()


class ClientSide:
    """What forwarding needs of the client's connection (the handler implements it)."""

    http10 = False           # an HTTP/1.0 client: no chunked encoding
    close_connection = False

    def send_head(self, status, reason, headers, framing, body=b""):
        """Write the status line, headers and ``body`` in one write.  ``framing``:
        a Content-Length, ``CHUNKED``, or None (no body, or one that ends at close)."""
        raise NotImplementedError

    def send_error_json(self, status, message, extra_headers=None):
        """An error of the proxy's own, in Anthropic's shape."""
        raise NotImplementedError

    def body_writer(self, chunked):
        """A :class:`relay.ClientWriter` for the response body."""
        raise NotImplementedError


_UNPARSED = object()


@dataclasses.dataclass
class Exchange:
    """One client request on its way through the providers; prints as its log line's start."""

    method: str
    path: str       # as the client sent it
    api_path: str   # what is appended to each provider's base URL
    mode: str       # the strategy ("fallback", ...), or the pinned provider's name
    body: bytes
    client_headers: list
    started: float
    cancel: Cancel = None
    first_byte: float = None
    tried: list = dataclasses.field(default_factory=list)
    model: str = None       # the model the client asked for (set when planning)
    target: str = None      # the model sent in this attempt
    model_key: str = None   # the target, when the provider has several models for this request
    strip_thinking: bool = False  # a provider refused a thinking signature: send none
    attempt_started: float = None  # when the current provider was asked
    key_index: int = None   # which of the provider's keys, when it has several
    keys_left: int = 0      # how many more of its keys this request may try
    # For the live views (feed.py): the provider asked now, and the answer so far.
    feed_id: int = 0
    trying: object = None
    writer: object = None   # a relay.ClientWriter, once the answer is on its way
    live_usage: Usage = None
    _parsed: object = dataclasses.field(default=_UNPARSED, repr=False)
    _model_seen: object = dataclasses.field(default=_UNPARSED, repr=False)
    # How it ended (see ended()), for the usage record and the request log.
    outcome: str = None
    provider: object = None
    status: int = None
    usage: Usage = None
    failure: str = None
    stream: bool = False

    def parsed_body(self):
        """The body as JSON (parsed once, when a provider needs more than its bytes), or None."""
        if self._parsed is _UNPARSED:
            try:
                self._parsed = json.loads(self.body) if self.body else None
            except (ValueError, UnicodeDecodeError):  # not JSON: the provider will say so
                self._parsed = None
        return self._parsed

    def model_seen(self):
        """The model asked for, as far as it is known without parsing the body: the one
        read for the plan, else one named first in the body (:func:`upstream.model_first`),
        else None.  Found once, for the live views, the speeds and the usage record."""
        if self._model_seen is _UNPARSED:
            self._model_seen = self.model or model_first(self.body)
        return self._model_seen

    def key(self, provider):
        """The provider key this attempt sends (its first, unless it has several)."""
        return provider.api_key if self.key_index is None else provider.api_keys[self.key_index]

    def note(self, provider, outcome):
        details = [d for d in (self.model_key, self.key_index is not None and mask_key(self.key(provider)))
                   if d]
        name = f"{provider.name}[{' '.join(details)}]" if details else provider.name
        self.tried.append(f"{name}={outcome}")

    def elapsed(self):
        return time.monotonic() - self.started

    def ended(self, outcome, provider=None, status=None, usage=None, failure=None, stream=False):
        """Say how the request ended: ``"answered"`` (by ``provider``; ``failure`` if its
        answer was cut), ``"client cancelled"``, ``"all failed"``, ``"shutting down"``
        or ``"no provider"``; ``status`` is what the client got.  Read by :mod:`usage`."""
        self.outcome, self.provider, self.status = outcome, provider, status
        self.usage, self.failure, self.stream = usage, failure, stream

    def summary(self):
        """How it ended, as a tuple of :data:`feed.SUMMARY_FIELDS` (for the live views)."""
        now = time.monotonic()
        usage = self.usage
        return (self.feed_id, self.method, self.api_path, self.mode, self.model_seen(),
                self.provider.name if self.provider is not None else None, tuple(self.tried),
                self.outcome, self.status, self.failure, self.stream,
                time.time() - (now - self.started), round(now - self.started, 3),
                None if self.first_byte is None else round(self.first_byte - self.started, 3),
                usage.input_tokens if usage else None, usage.output_tokens if usage else None)

    def __str__(self):  # outcomes may carry a provider's words (an error event's type)
        return printable(f"{self.method} {self.path} {self.mode} {' '.join(self.tried)}".rstrip())


@dataclasses.dataclass
class FailedAnswer:
    """A provider's failover answer (429, 5xx, an error as first event), kept whole."""

    status: int
    reason: str
    headers: list
    body: bytes
    provider_status: int = None  # the provider's own status, when a translation changed it


def classify(status, failover_statuses, stream_error=None):
    """What a provider's answer means for the request: ANSWERED, FAIL_OVER or PASS_BACK."""
    if status in failover_statuses or stream_error:
        return FAIL_OVER
    return ANSWERED if 200 <= status < 300 else PASS_BACK


class Forwarder:
    """The failover loop for every request of one server."""

    def __init__(self, config, policy, upstreams):
        self.config = config
        self.policy = policy
        self.upstreams = upstreams
        self.key_masks = key_masks(config.providers)
        self.signatures = SignatureBook()

    def reconfigured(self, config, upstreams):
        """The forwarder for a reloaded ``config``; what it learned of providers'
        thinking signatures goes along (this one finishes the requests it has)."""
        forwarder = Forwarder(config, self.policy, upstreams)
        forwarder.signatures = self.signatures
        return forwarder

    def forward(self, ex, plan, client):
        """Try ``plan``'s providers in order until one answers, and relay that answer;
        if none does, send the last failure.  ``ex.cancel`` must be set."""
        failures = []
        for provider in plan:
            models = self.policy.models_in_order(provider, ex.model)
            for target in models:  # model fallback inside the provider, when its map gives a list
                ex.target, ex.model_key = target, (target if len(models) > 1 else None)
                outcome = self._attempt_with_keys(provider, ex, failures)
                answered = self._deliver(provider, outcome, ex, client)
                if answered is not _NOT_ANSWERED:
                    return answered
                if ex.cancel.is_set():
                    client.close_connection = True
                    ex.ended("client cancelled")
                    log.info("%s -> client cancelled before the answer", ex)
                    return None
                if ex.cancel.aborted:
                    client.close_connection = True
                    client.send_error_json(503, "claude-proxy is shutting down; try again in a moment.",
                                           {"x-should-retry": "true"})
                    ex.ended("shutting down", status=503)
                    log.info("%s -> 503 (shutting down before the answer)", ex)
                    return None
                failures.append(outcome)
                if isinstance(outcome, UpstreamError):
                    break  # the provider could not be reached: its other models cannot either
        if self.config.wait_seconds and not ex.cancel.is_over():
            return self._wait_for_one(plan, failures, ex, client)
        return self._all_failed(failures, ex, client)

    def _wait_for_one(self, plan, failures, ex, client):
        """Every provider failed: keep trying the soonest to recover, every
        ``wait_every`` seconds, until one answers or ``wait_seconds`` have passed
        since the request came (``wait_when_all_fail``).  Nothing reaches the
        client meanwhile; a client that hangs up ends the wait at once."""
        deadline = ex.started + self.config.wait_seconds
        self.policy.count_waiting(+1)
        try:
            while time.monotonic() + self.config.wait_every <= deadline:
                if ex.cancel.wait(self.config.wait_every):
                    break
                provider = next(p for p in self.policy.plan(model=ex.model, config=self.config) + plan
                                if p in plan)
                ex.target, ex.model_key = self.policy.models_in_order(provider, ex.model)[0], None
                outcome = self._attempt_with_keys(provider, ex, failures)
                answered = self._deliver(provider, outcome, ex, client)
                if answered is not _NOT_ANSWERED:
                    return answered
                failures.append(outcome)
        finally:
            self.policy.count_waiting(-1)
        if ex.cancel.is_set():
            client.close_connection = True
            log.info("%s -> client cancelled while waiting for a provider", ex)
            ex.ended("client cancelled")
            return None
        return self._all_failed(failures, ex, client)

    def _deliver(self, provider, outcome, ex, client):
        """Relay ``outcome`` if it is an answer; else ``_NOT_ANSWERED``."""
        if isinstance(outcome, tuple):
            return self._answer(provider, *outcome, ex, client)
        if isinstance(outcome, openai_forward.LocalAnswer):
            return self._answer_local(provider, outcome, ex, client)
        if isinstance(outcome, openai_forward.TranslatedStream):
            return self._answer_translated(provider, outcome, ex, client)
        return _NOT_ANSWERED

    def _attempt(self, provider, ex):
        """Send the request to ``provider`` and wait for its answer to begin.

        Returns ``(response, first)`` if this provider answers, else the
        failure to fail over from: an :class:`UpstreamError` or a
        :class:`FailedAnswer`.  ``first`` is what was read before the commit
        point: a stream's first event, a small body whole (up to
        ``WHOLE_BODY_LIMIT``, so it goes out in one write), or an error's
        body whole (up to ``ERROR_BODY_LIMIT``, so that keys in it can be
        masked; the rest of a longer one is dropped).  Failures are booked
        with the policy here.
        """
        body = rewrite_model(self._body_for(provider, ex), provider, ex.target)
        length = len(body) if body or ex.method in ("POST", "PUT", "PATCH") else None
        headers = upstream_headers(provider, ex.client_headers, length, ex.key(provider))
        try:
            response = self.upstreams.send(
                provider, ex.method, provider.base_path + ex.api_path, headers, body, ex.cancel)
            if classify(response.status, self.config.failover_statuses) is FAIL_OVER:
                return self._failover_answer(provider, response, ex)
            stream = is_event_stream(response)
            if stream:
                first = read_first_event(response)
            elif not 200 <= response.status < 300:
                first = response.read_all(ERROR_BODY_LIMIT)
            elif response.content_length is not None and response.content_length <= WHOLE_BODY_LIMIT:
                first = response.read_all(WHOLE_BODY_LIMIT)  # a cut body is still a failover
            else:
                first = b""
        except UpstreamError as exc:
            return self.book_unreachable(provider, ex, exc)
        if not 200 <= response.status < 300 and self.body_says_fail_over(first):
            ex.note(provider, f"{response.status}-body")
            self.book_failure(provider, ex, response.status, describe_error(response.status, first),
                              retry_after_seconds(response.headers))
            return FailedAnswer(response.status, response.reason, response.headers, first)
        failed = first_event_error(first) if stream else None
        if classify(response.status, self.config.failover_statuses, failed) is FAIL_OVER:
            response.close()
            ex.note(provider, f"stream-{failed}")
            self.policy.record_failure(provider, f"stream began with {failed}", model=ex.model_key)
            return FailedAnswer(response.status, response.reason, response.headers, first)
        return response, first

    def _attempt_with_keys(self, provider, ex, failures):
        """Attempt ``provider``; one with several keys moves on to its next key at once
        when a key is rate-limited (429) or refused (401/403), until none is left."""
        keys = self.policy.keys_in_order(provider)
        if not keys:
            ex.note(provider, "no-key")
            return UpstreamError(provider.name, "keys", "every key was refused (401/403); see status")
        for position, index in enumerate(keys):
            ex.key_index, ex.keys_left = index, len(keys) - position - 1
            outcome = self._attempt_with_retries(provider, ex)
            if index is None or not ex.keys_left or ex.cancel.is_over():
                return outcome
            if isinstance(outcome, FailedAnswer) and (outcome.provider_status or outcome.status) == 429:
                failures.append(outcome)  # booked for the key; the next key is tried at once
                continue
            status = _answer_status(outcome)
            if status in (401, 403):  # that key is bad: refuse it, and try the next
                self.policy.record_key_failure(provider, index, f"{status} key refused", refused=True)
                _discard(outcome)
                continue
            return outcome
        return outcome

    def _attempt_with_retries(self, provider, ex):
        """One attempt, tried again up to the provider's ``retries`` times after a 5xx
        or a connection failure, with exponential back-off and jitter.  Nothing has
        reached the client yet; a client that hangs up ends the wait at once."""
        outcome = self._attempt_once(provider, ex)
        for retry in range(1, provider.retries + 1):
            if not _retryable(outcome) or ex.cancel.is_over():
                break
            pause = min(RETRY_BACKOFF_CAP, provider.retry_backoff_ms / 1000 * 2 ** (retry - 1))
            pause *= random.uniform(0.5, 1.0)  # jitter: retries of many requests do not line up
            if ex.cancel.wait(pause):
                break
            outcome = self._attempt_once(provider, ex)
        return outcome

    def _attempt_once(self, provider, ex):
        ex.attempt_started = time.monotonic()
        ex.trying = provider
        if provider.type == "openai":
            return openai_forward.attempt(self, provider, ex)
        outcome = self._attempt(provider, ex)
        if self._refuses_a_signature(outcome, ex):  # once more, without any thinking
            ex.note(provider, "400-signature")
            ex.strip_thinking = True
            outcome = self._attempt(provider, ex)
        return outcome

    def body_says_fail_over(self, body):
        """Does an error answer's body hold one of the ``failover_on_body`` texts?"""
        return any(trigger.encode() in body for trigger in self.config.failover_on_body)

    def book_unreachable(self, provider, ex, exc):
        """``provider`` could not be reached or did not answer in time: its failure,
        unless the client hung up or the proxy is stopping.  Returns ``exc``."""
        ex.note(provider, exc.kind)
        if not ex.cancel.is_over():
            self.policy.record_failure(provider, f"{exc.kind}: {exc.detail}")
        return exc

    def book_failure(self, provider, ex, status, reason, retry_after):
        """Book a failover answer: a 429 for one of several keys cools that key only,
        as long as another key is left to try; anything else is the provider's."""
        if ex.key_index is not None and status == 429:
            self.policy.record_key_failure(provider, ex.key_index, reason, retry_after)
            if ex.keys_left:
                return
        self.policy.record_failure(provider, reason, retry_after, model=ex.model_key)

    def _body_for(self, provider, ex):
        """The body for an Anthropic-type ``provider``: as the client sent it, less the
        thinking blocks it did not sign (or all of them after it refused one)."""
        if ex.strip_thinking:
            cleaned = all_thinking_removed(ex.parsed_body())
        elif b'"signature"' in ex.body:
            cleaned = foreign_thinking_removed(ex.parsed_body(), self.signatures, provider.name)
        else:
            return ex.body
        return ex.body if cleaned is None else json.dumps(cleaned, ensure_ascii=False).encode("utf-8")

    def _refuses_a_signature(self, outcome, ex):
        """A 400 about a thinking block's signature, for a body that has thinking to remove."""
        if not isinstance(outcome, tuple) or ex.strip_thinking:
            return False
        response, first = outcome
        if not is_signature_rejection(response.status, first):
            return False
        if all_thinking_removed(ex.parsed_body()) is None:
            return False
        response.close()
        return True

    def _failover_answer(self, provider, response, ex):
        """Keep a 429/5xx answer whole, in case it is the last one (the client then gets it)."""
        try:
            body = response.read_all(ERROR_BODY_LIMIT)
        except UpstreamError as exc:  # its status is what matters; the body is a courtesy
            log.debug("%s: error body unreadable: %s", provider.name, exc)
            body = b""
        ex.note(provider, response.status)
        self.book_failure(provider, ex, response.status, describe_error(response.status, body),
                          retry_after_seconds(response.headers))
        return FailedAnswer(response.status, response.reason, response.headers, body)

    def _answer(self, provider, response, first, ex, client):
        """Past the commit point: relay ``provider``'s answer to the client and book it."""
        ex.note(provider, response.status)
        usage = ex.live_usage = Usage()
        failure = None
        stream = is_event_stream(response)
        json_body = (response.header("content-type") or "").startswith("application/json")
        try:
            if response.complete or not 200 <= response.status < 300:  # read whole (see _attempt)
                if not 200 <= response.status < 300:
                    first = mask_keys(first, self.key_masks)
                if stream:  # a short stream with a Content-Length, all there in one read
                    usage.feed_events(first)
                elif json_body:
                    usage.feed_json(first)
                client.send_head(response.status, response.reason, response.headers,
                                 _whole_body_framing(ex.method, response, first), first)
                ex.first_byte = time.monotonic()
            else:
                framing = CHUNKED if stream or response.content_length is None else response.content_length
                if framing is CHUNKED and client.http10:
                    framing = None  # no chunked encoding there: the close ends the body
                    client.close_connection = True
                writer = ex.writer = client.body_writer(chunked=framing is CHUNKED)
                client.send_head(response.status, response.reason, response.headers, framing)
                ex.first_byte = time.monotonic()
                if ex.method == "HEAD":
                    response.close()
                elif stream:
                    failure = relay_stream(response, writer, first, usage, ex.cancel)
                else:
                    failure = relay_body(response, writer, usage, ex.cancel, json_body)
                    if failure:  # the body cannot be completed: the client must see it end short
                        client.close_connection = True
        except ClientGone:
            response.close()
            client.close_connection = True
            self._book(provider, ex, response.status, None, usage)  # it answered; the tokens were spent
            ex.ended("client cancelled", provider, response.status, usage, stream=stream)
            log.info("%s -> client cancelled after %.3fs %s", ex, ex.elapsed(), usage)
            return
        self._book(provider, ex, response.status, failure, usage)
        ex.ended("answered", provider, response.status, usage, failure, stream)
        log.info("%s -> %s%s ttfb=%.3fs total=%.3fs %s", ex, response.status,
                 f" ({failure})" if failure else "", ex.first_byte - ex.started, ex.elapsed(), usage)

    def _answer_local(self, provider, answer, ex, client):
        """An answer complete before the commit point (translated whole, or made here)."""
        if not ex.tried or not ex.tried[-1].startswith(f"{provider.name}="):
            ex.note(provider, "local")
        usage = Usage()
        usage.update(answer.usage)
        body = mask_keys(answer.body, self.key_masks) if answer.status >= 400 else answer.body
        try:
            client.send_head(answer.status, _reason(answer.status), answer.headers, len(body), body)
        except ClientGone:
            client.close_connection = True
        ex.first_byte = time.monotonic()
        self._book(provider, ex, answer.status, None, usage)
        ex.ended("answered", provider, answer.status, usage)
        log.info("%s -> %s ttfb=%.3fs total=%.3fs %s", ex, answer.status, ex.first_byte - ex.started,
                 ex.elapsed(), usage)

    def _answer_translated(self, provider, started, ex, client):
        """Past the commit point: translate an OpenAI-type provider's stream as it arrives."""
        usage = ex.live_usage = Usage()
        chunked = not client.http10
        if not chunked:
            client.close_connection = True  # no chunked encoding in HTTP/1.0: the close ends the body
        writer = ex.writer = client.body_writer(chunked=chunked)
        try:
            client.send_head(200, "OK", list(openai_forward.STREAM_HEADERS), CHUNKED if chunked else None)
            ex.first_byte = time.monotonic()
            failure = openai_forward.relay_stream(started, writer, usage, ex.cancel)
        except ClientGone:
            started.response.close()
            client.close_connection = True
            self._book(provider, ex, 200, None, usage)  # it answered; the tokens were spent
            ex.ended("client cancelled", provider, 200, usage, stream=True)
            log.info("%s -> client cancelled after %.3fs %s", ex, ex.elapsed(), usage)
            return
        self._book(provider, ex, 200, failure, usage)
        ex.ended("answered", provider, 200, usage, failure, stream=True)
        log.info("%s -> 200%s ttfb=%.3fs total=%.3fs %s", ex, f" ({failure})" if failure else "",
                 ex.first_byte - ex.started, ex.elapsed(), usage)

    def _book(self, provider, ex, status, failure, usage):
        if failure and ex.cancel.aborted:  # ended by the proxy's shutdown, not by the provider
            self.policy.record_answer(provider)
        elif failure:
            self.policy.record_failure(provider, failure)
        elif 200 <= status < 300:
            self.policy.record_success(provider, usage, model=ex.model_key)
            if ex.key_index is not None:
                self.policy.record_key_success(provider, ex.key_index)
            if ex.first_byte is not None and ex.attempt_started is not None:
                self.policy.record_speed(provider, ex.model_seen(),
                                         ex.first_byte - ex.attempt_started,
                                         usage.output_tokens, time.monotonic() - ex.first_byte)
            if usage.signatures:
                self.signatures.remember(provider.name, usage.signatures)
        else:
            self.policy.record_answer(provider)

    def _all_failed(self, failures, ex, client):
        """Every provider failed: give the client the latest real answer (so its
        own retry logic sees the 429/529 and its retry-after), else our own error."""
        answers = [f for f in failures if isinstance(f, FailedAnswer)]
        if answers:
            last = answers[-1]
            status = last.status
            body = mask_keys(last.body, self.key_masks)
            ex.ended("all failed", status=status)
            client.send_head(last.status, last.reason, last.headers, len(body), body)
        else:
            error = failures[-1]
            status = 504 if error.kind == "timeout" else 502
            ex.ended("all failed", status=status)
            client.send_error_json(status, f"No provider could answer ({', '.join(ex.tried)}); "
                                           f"last: {error.provider} {error.kind}: {error.detail}")
        outcome = "all failed" if ex.mode in STRATEGIES else "pinned provider failed"
        log.warning("%s -> %s (%s) total=%.3fs", ex, status, outcome, ex.elapsed())


def key_masks(providers):
    """``(key, masked)`` as bytes for every configured key of at least
    ``MASKED_KEY_MIN`` characters, longest first (a key inside another is
    then never left half-masked)."""
    keys = {key for p in providers for key in p.api_keys if len(key) >= MASKED_KEY_MIN}
    return [(key.encode(), mask_key(key).encode()) for key in sorted(keys, key=len, reverse=True)]


def mask_keys(body, masks):
    """``body`` with every key in ``masks`` replaced by its masked form; only those bytes change."""
    for key, masked in masks:
        if key in body:
            body = body.replace(key, masked)
    return body


def _whole_body_framing(method, response, body):
    if method == "HEAD":  # the provider's length is the GET body's: pass it on
        return response.header("content-length")
    if response.status in (204, 304):  # never a body, never a length (RFC 9110 8.6)
        return None
    return len(body)


def no_provider_message(config, pinned):
    """Why no provider can take a request (the 503's message), naming what to fix."""
    if pinned is not None and not pinned.enabled:
        return f"Provider '{pinned.name}' is disabled in {config.path}"
    if pinned is not None and pinned.key_problem:
        return (f"Provider '{pinned.name}' has no usable API key: {pinned.key_problem}; "
                "fix it (the proxy reads .env again when it is saved)")
    if pinned is not None:
        return (f"Provider '{pinned.name}' has no API key: set {pinned.api_key_env} in "
                f"{config.env_path} (read again when saved) or the environment (restart claude-proxy)")
    if any(p.key_problem for p in config.providers if p.enabled):
        why = "; ".join(p.missing_key(config.env_path) for p in config.providers if p.enabled)
        return f"No provider is usable: {why}. Fix that (the proxy reads .env again when it is saved)"
    wanted = ", ".join(p.api_key_env for p in config.providers if p.enabled) or "a provider"
    return (f"No provider is usable: set {wanted} in {config.env_path} "
            f"(or enable one in {config.path}); the proxy reads both again when they are saved")


def _reason(status):
    return http.HTTPStatus(status).phrase if status in http.HTTPStatus._value2member_map_ else ""


def _answer_status(outcome):
    """The status of an answer that would go to the client, or None."""
    if isinstance(outcome, tuple):
        return outcome[0].status
    if isinstance(outcome, openai_forward.LocalAnswer):
        return outcome.status
    return None


def _discard(outcome):
    """Drop an answer that will not reach the client (its connection, if any)."""
    if isinstance(outcome, tuple):
        outcome[0].close()


def _retryable(outcome):
    """A failure worth trying the same provider again for: a 5xx, or no connection."""
    if isinstance(outcome, UpstreamError):
        return outcome.kind not in ("cancelled", "keys")
    return isinstance(outcome, FailedAnswer) and (outcome.provider_status or outcome.status) >= 500
