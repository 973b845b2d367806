"""Shared fixtures: fake providers and an in-process proxy on 127.0.0.1."""

import contextlib
import json
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from claude_proxy.config import load_config  # noqa: E402
from claude_proxy.logfile import setup_logging  # noqa: E402
from claude_proxy.http_server import ProxyServer  # noqa: E402
from claude_proxy.state import StatePaths, load_or_create_token  # noqa: E402
from fakes import FakeProvider, eventually, request  # noqa: E402
from sdk_clients import close_all as close_sdk_clients  # noqa: E402


class RunningProxy:
    """A proxy server running in a thread of the test process."""

    def __init__(self, tmp_path, providers, environ, **settings):
        self.config_path = tmp_path / "config.json"
        self.write_config(providers, **settings)
        self.config = load_config(self.config_path, environ=environ)
        self.paths = StatePaths(self.config.state_dir)
        self.token = load_or_create_token(self.paths.token)  # as run.py: the endpoints need it
        setup_logging(self.paths, quiet=True)
        self.server = ProxyServer(self.config, self.token, self.paths.token,
                                  loader=lambda: load_config(self.config_path, environ=environ,
                                                             reloading=True))
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def write_config(self, providers, **settings):
        """Write config.json (``proxy_port`` 0 unless given); the running proxy reloads it."""
        config_dict = {"proxy_port": 0, "providers": providers, **settings}
        self.config_path.write_text(json.dumps(config_dict), encoding="utf-8")

    @property
    def url(self):
        return self.server.url

    @property
    def policy(self):
        return self.server.policy

    def auth(self, **extra):
        headers = {"x-api-key": self.token} if self.token else {}
        headers.update(extra)
        return headers

    def post(self, body=None, path="/v1/messages", headers=None, prefix="", timeout=10):
        headers = {**self.auth(), "content-type": "application/json", **(headers or {})}
        if body is None:
            body = {"model": "claude-sonnet-4-5", "max_tokens": 64,
                    "messages": [{"role": "user", "content": "hi"}]}
        return request(self.url + prefix, "POST", path, body, headers, timeout=timeout)

    @contextlib.contextmanager
    def stream_held(self, provider, frames, model="m"):
        """A streaming request in a thread, held by ``provider`` (a ``Stream`` with
        ``hold_after=frames``) once it has sent ``frames`` frames, while the block runs.
        Yields a dict that holds the answer as ``"r"`` after the block, once the
        provider is released and the answer has ended."""
        answer = {}
        worker = threading.Thread(target=lambda: answer.update(r=self.post(
            {"model": model, "stream": True, "messages": []})))
        worker.start()
        try:
            assert eventually(lambda: provider.frames_sent == frames)
            yield answer
        finally:
            provider.release()
            worker.join(10)

    def log_text(self):
        for handler in __import__("logging").getLogger("claude_proxy").handlers:
            handler.flush()
        return self.paths.log.read_text(encoding="utf-8") if self.paths.log.exists() else ""

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def providers():
    """Make fake providers; all are closed at the end of the test."""
    made = []

    def make(default=None):
        provider = FakeProvider(default)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        provider.close()


@pytest.fixture
def proxy(tmp_path):
    """Start a proxy in front of fake providers: ``proxy(p1, p2, cooldown_minutes=1)``."""
    started = []

    def start(*fakes, names=None, provider_settings=None, environ=None, **settings):
        names = names or [f"p{i}" for i in range(1, len(fakes) + 1)]
        entries = []
        env = {}
        for index, (name, fake) in enumerate(zip(names, fakes)):
            url = fake if isinstance(fake, str) else fake.url
            entry = {"name": name, "base_url": url, "api_key_env": f"KEY_{name.upper()}"}
            entry.update((provider_settings or {}).get(name, {}))
            entries.append(entry)
            env[f"KEY_{name.upper()}"] = f"secret-key-{name}-{index}"
        if environ is not None:
            env = environ
        running = RunningProxy(tmp_path, entries, env, **settings)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture(autouse=True)
def _close_sdk_clients():
    """SDK clients made by ``sdk_clients.sdk`` are closed after each test."""
    yield
    close_sdk_clients()
