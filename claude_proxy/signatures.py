"""Thinking-block signatures across providers.

A thinking block carries a ``signature`` made by the provider that wrote
it; another provider rejects it ("Invalid signature in thinking block").
After a failover the history of a session holds blocks signed by several
providers, and by this proxy itself (thinking made from an OpenAI-type
provider's reasoning, see :mod:`openai_answer`).  So:

- :class:`SignatureBook` remembers which provider signed which blocks, from
  the answers that pass through (bounded: the oldest are forgotten);
- :func:`foreign_thinking_removed` drops, from a body about to go to an
  Anthropic-type provider, the thinking blocks it did not sign: those the
  book knows to be another provider's, and those the proxy signed.  Blocks
  whose signer is unknown (from before the proxy started) are left alone;
- if a provider still answers 400 about a thinking signature, the request
  is sent to it once more with every thinking block removed
  (:func:`all_thinking_removed`).

This is the one change made to an Anthropic-type request beyond the model
map; a body without such blocks goes out byte for byte as the client sent it.
"""

import collections
import hashlib
import json
import threading

from .openai_answer import is_proxy_signature
from .sse import event_name_and_data, split_events

BOOK_SIZE = 20000  # signatures remembered (a digest and a name each: a few MB at most)
THINKING_TYPES = ("thinking", "redacted_thinking")


def _digest(signature):
    return hashlib.blake2b(signature.encode("utf-8", "replace"), digest_size=16).digest()


class SignatureBook:
    """Which provider signed which thinking blocks; thread-safe, bounded."""

    def __init__(self, size=BOOK_SIZE):
        self._owners = collections.OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def remember(self, provider_name, signatures):
        with self._lock:
            for signature in signatures:
                key = _digest(signature)
                self._owners[key] = provider_name
                self._owners.move_to_end(key)
            while len(self._owners) > self._size:
                self._owners.popitem(last=False)

    def owner(self, signature):
        with self._lock:
            return self._owners.get(_digest(signature))


def signatures_in_events(data):
    """The thinking signatures in a chunk of an Anthropic stream (``signature_delta``s)."""
    if b"signature_delta" not in data:
        return []
    found = []
    for event in split_events(data):
        if b"signature_delta" not in event:
            continue
        _, payload = event_name_and_data(event)
        try:
            delta = json.loads(payload).get("delta") or {}
        except (ValueError, AttributeError):  # not an event of Anthropic's shape: nothing to learn
            continue
        if delta.get("type") == "signature_delta" and isinstance(delta.get("signature"), str):
            found.append(delta["signature"])
    return found


def signatures_in_message(body):
    """The thinking signatures in a whole Anthropic JSON answer."""
    if b'"signature"' not in body:
        return []
    try:
        content = json.loads(body).get("content") or []
    except (ValueError, AttributeError, UnicodeDecodeError):  # not a message: nothing to learn
        return []
    return [block["signature"] for block in content if isinstance(block, dict)
            and block.get("type") == "thinking" and isinstance(block.get("signature"), str)]


def foreign_thinking_removed(body, book, provider_name):
    """``body`` (a parsed request) without the thinking blocks ``provider_name`` did not
    sign, or None when there are none to remove."""
    def foreign(block):
        signature = block.get("signature")
        if not isinstance(signature, str):
            return False
        if is_proxy_signature(signature):
            return True
        owner = book.owner(signature)
        return owner is not None and owner != provider_name

    return _without_thinking(body, foreign)


def all_thinking_removed(body):
    """``body`` without any thinking block, or None when it has none."""
    return _without_thinking(body, lambda block: True)


def _without_thinking(body, drop):
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list):
        return None
    changed = False
    out = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            kept = [block for block in content if not (
                isinstance(block, dict) and block.get("type") in THINKING_TYPES and drop(block))]
            if len(kept) != len(content):
                changed = True
                message = {**message, "content": kept}
        out.append(message)
    return {**body, "messages": out} if changed else None


def is_signature_rejection(status, body):
    """Does a provider's answer refuse a thinking block's signature?"""
    if status != 400:
        return False
    lowered = body[:4096].lower()
    return b"signature" in lowered and b"thinking" in lowered
