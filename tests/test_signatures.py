"""Thinking-block signatures across providers: a block one provider signed never
goes to another, and a provider that still refuses a signature gets the request
once more without thinking."""

import json

from fakes import MESSAGE, Reply, Stream, eventually, sse

THINKING_STREAM = [
    sse("message_start", {"type": "message_start", "message": {
        "id": "msg_a", "type": "message", "role": "assistant", "model": "m", "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 5, "output_tokens": 1}}}),
    sse("content_block_start", {"type": "content_block_start", "index": 0,
                                "content_block": {"type": "thinking", "thinking": ""}}),
    sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                "delta": {"type": "thinking_delta", "thinking": "let me think"}}),
    sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                "delta": {"type": "signature_delta", "signature": "sig-from-alpha"}}),
    sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
    sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                          "usage": {"output_tokens": 9}}),
    sse("message_stop", {"type": "message_stop"}),
]


def history(signature):
    return {"model": "m", "max_tokens": 8, "messages": [
        {"role": "user", "content": "think"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "let me think", "signature": signature},
                                          {"type": "text", "text": "done"}]},
        {"role": "user", "content": "and now?"}]}


def stream_request(running):
    return running.post({"model": "m", "max_tokens": 8, "stream": True,
                         "messages": [{"role": "user", "content": "think"}]})


def test_a_block_signed_by_one_provider_is_not_sent_to_another(providers, proxy):
    alpha = providers(Stream(THINKING_STREAM))
    beta = providers(Reply(200))
    running = proxy(alpha, beta, names=["alpha", "beta"])
    assert stream_request(running)[0] == 200  # alpha signs "sig-from-alpha"

    running.post(history("sig-from-alpha"), prefix="/provider/beta")
    sent_to_beta = beta.requests[-1].json()["messages"][1]["content"]
    assert sent_to_beta == [{"type": "text", "text": "done"}]

    alpha.default = Reply(200)
    body = json.dumps(history("sig-from-alpha")).encode()
    running.post(body, prefix="/provider/alpha")
    assert alpha.requests[-1].body == body  # its own block goes back to it untouched, byte for byte


def test_a_block_of_unknown_origin_goes_as_it_is(providers, proxy):
    beta = providers(Reply(200))
    running = proxy(beta, names=["beta"])
    body = json.dumps(history("sig-from-before-the-proxy-started"), indent=1).encode()

    running.post(body)

    assert beta.requests[-1].body == body


def test_a_provider_refusing_a_signature_gets_the_request_once_more_without_thinking(providers, proxy):
    refusal = Reply(400, {"type": "error", "error": {
        "type": "invalid_request_error",
        "message": "messages.1.content.0: Invalid `signature` in `thinking` block"}})
    beta = providers().queue(refusal)
    beta.default = Reply(200, {**MESSAGE, "content": [{"type": "text", "text": "fine without"}]})
    running = proxy(beta, names=["beta"])

    status, _, body = running.post(history("sig-nobody-knows"))

    assert status == 200 and json.loads(body)["content"][0]["text"] == "fine without"
    first, second = beta.requests
    assert first.json()["messages"][1]["content"][0]["type"] == "thinking"
    assert second.json()["messages"][1]["content"] == [{"type": "text", "text": "done"}]
    assert eventually(lambda: "beta=400-signature beta=200" in running.log_text())  # logged after the answer


def test_a_signature_refusal_without_thinking_to_remove_is_passed_back(providers, proxy):
    refusal = Reply(400, {"type": "error", "error": {"type": "invalid_request_error",
                                                     "message": "Invalid signature in thinking block"}})
    beta = providers(refusal)
    running = proxy(beta, names=["beta"])

    status, _, _ = running.post()

    assert status == 400 and len(beta.requests) == 1
