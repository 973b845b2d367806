"""The official ``anthropic`` SDK pointed at a running proxy; every client made
here is closed after its test (conftest.py), with its connections."""

import anthropic

_clients = []


def sdk(running, prefix="", api_key=None):
    """An SDK client for ``running`` (``prefix``: ``/provider/NAME`` and the like)."""
    client = anthropic.Anthropic(base_url=running.url + prefix, api_key=api_key or running.token,
                                 max_retries=0, timeout=20.0)
    _clients.append(client)
    return client


def close_all():
    while _clients:
        _clients.pop().close()
