"""Finding, reading and validating the configuration.

The configuration is ``config.json`` (found by :func:`resolve_config_path`) and
the provider keys, which come from the process environment and from a ``.env``
file beside the config.  Everything a user can get wrong is reported as a
:class:`ConfigError` whose problems are single lines naming the file and the
field; nothing here raises anything else for bad input.
"""

import copy
import dataclasses
import fnmatch
import functools
import ipaddress
import json
import math
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from .errors import ConfigError
from .headers import HEADER_NAME, PROXY_SET_HEADERS, sendable_in_header
from .routing import STRATEGIES

CONFIG_ENV_VAR = "CLAUDE_PROXY_CONFIG"
APP_DIR = Path(__file__).resolve().parent.parent

#: What runs when there is no config file at all; config.example.json is the same.
DEFAULT_CONFIG = {
    "proxy_port": 8787,
    "cooldown_minutes": 30,
    "providers": [
        {
            "name": "minimax",
            "base_url": "https://api.minimax.io/anthropic",
            "api_key_env": "MINIMAX_API_KEY",
            "auth_header": "bearer",
            "models": {"*": "MiniMax-M2"},
        },
        {
            "name": "moonshot",
            "base_url": "https://api.moonshot.ai/anthropic",
            "api_key_env": "MOONSHOT_API_KEY",
            "auth_header": "bearer",
            "models": {
                "claude-*haiku*": "kimi-k2-turbo-preview",
                "*": "kimi-k2-0905-preview",
            },
        },
    ],
}

AUTH_HEADER_CHOICES = ("x-api-key", "bearer", "both")
DEFAULT_FAILOVER_STATUSES = (429, "5xx")
PROVIDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

TOP_LEVEL_KEYS = {
    "proxy_port", "proxy_host", "providers", "cooldown_minutes", "failover_statuses",
    "max_body_mb", "require_token", "state_dir", "connect_timeout", "read_timeout",
    "max_cooldown_minutes", "allowed_hosts", "max_connections", "receive_timeout",
    "strategy", "min_tps", "failover_on_body", "wait_when_all_fail",
    "usage_record", "usage_retention_days", "prices", "request_log",
}
PRICE_KEYS = ("input", "output", "cache_read", "cache_write")  # US dollars per million tokens
REQUEST_LOG_KEYS = {"path", "bodies", "max_mb", "keep", "max_body_kb"}
PROVIDER_TYPES = ("anthropic", "openai")
PROVIDER_KEYS = {
    "name", "type", "openai", "base_url", "api_key_env", "models", "enabled", "auth_header", "headers",
    "weight", "min_tps", "retries", "retry_backoff_ms", "failure_threshold",
    "connect_timeout", "read_timeout",
}


@dataclasses.dataclass
class Provider:
    """One upstream, as configured.  ``api_key`` never appears in ``repr``."""

    name: str
    base_url: str
    api_key_env: str  # the variable's name (names, comma-separated, when several)
    api_key: str | None = dataclasses.field(default=None, repr=False)  # the first of api_keys
    api_keys: list = dataclasses.field(default_factory=list, repr=False)  # rotated per request
    key_env_names: tuple = ()  # the variables that hold the keys, in order
    key_origins: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)  # key -> variable
    key_source: str | None = None  # "environment" or the .env path
    key_problem: str | None = None  # why a key that is set cannot be used
    enabled: bool = True
    auth_header: str = "both"  # or a header name that carries the key as it is ("api-key")
    type: str = "anthropic"    # or "openai": Chat Completions, translated both ways
    openai: object = None      # an openai_request.OpenAIOptions, for type "openai"
    chat_path: str = "/chat/completions"  # appended to base_url, for type "openai"
    weight: float = 1.0        # the "weighted" strategy draws the first provider by weight
    retries: int = 0           # same-provider retries of a 5xx or connection failure
    retry_backoff_ms: float = 500.0  # the first retry's pause; doubled each time, capped
    failure_threshold: int = 1  # failures in a row before it cools (a retry-after cools at once)
    min_tps: float = None      # "fastest": slower than this (tokens/s) goes to the back
    headers: dict = dataclasses.field(default_factory=dict)
    models: dict = dataclasses.field(default_factory=dict)
    connect_timeout: float = 10.0
    read_timeout: float = 300.0

    def __post_init__(self):
        if self.api_key and not self.api_keys:
            self.api_keys = [self.api_key]
        if not self.key_env_names:
            self.key_env_names = (self.api_key_env,)

    @property
    def usable(self):
        return self.enabled and bool(self.api_key)

    @property
    def availability(self):
        """``"disabled"``, ``"no_key"`` or ``"ready"``: what the config alone says
        (a running proxy adds ``"cooling"``, see ``FailoverPolicy.snapshot``)."""
        if not self.enabled:
            return "disabled"
        return "ready" if self.api_key else "no_key"

    def missing_key(self, env_path):
        """Why this provider has no usable key, as a phrase for messages."""
        return self.key_problem or f"{self.api_key_env} is not set (environment or {env_path})"

    @functools.cached_property
    def header_names(self):
        """The configured extra headers' names, lowercased: they replace the client's."""
        return frozenset(name.lower() for name in self.headers)

    @functools.cached_property
    def _url(self):
        return urlsplit(self.base_url)

    @property
    def scheme(self):
        return self._url.scheme

    @property
    def host(self):
        return self._url.hostname

    @property
    def port(self):
        return self._url.port or (443 if self.scheme == "https" else 80)

    @property
    def netloc(self):
        return self._url.netloc

    @property
    def base_path(self):
        return self._url.path.rstrip("/")

    def redact(self, text):
        """``text`` with this provider's keys masked (providers do echo keys in errors)."""
        for key in self.api_keys:
            if len(key) >= 4 and key in text:
                text = text.replace(key, mask_key(key))
        return text

    def models_for(self, model):
        """The provider's models for a request for ``model``, to try in order.

        The first matching glob of ``models`` wins; its value is one name or
        a list (model fallback inside this provider).  No match: ``[model]``.
        """
        lowered = (model or "").lower()
        for pattern, target in self.models.items():
            if fnmatch.fnmatchcase(lowered, pattern.lower()):
                return [target] if isinstance(target, str) else list(target)
        return [model]

    def map_model(self, model):
        """The provider's first model for ``model``."""
        return self.models_for(model)[0]


@dataclasses.dataclass(frozen=True)
class Price:
    """US dollars per million tokens of each kind; None where not configured."""

    input: float
    output: float
    cache_read: float = None
    cache_write: float = None


@dataclasses.dataclass
class RequestLogSettings:
    path: Path
    bodies: bool = False
    max_bytes: int = 50 * 1024 * 1024   # rotated at this size
    keep: int = 5                       # rotated files kept
    max_body_bytes: int = 256 * 1024    # of each body, with bodies on


@dataclasses.dataclass
class Config:
    path: Path
    exists: bool
    providers: list
    host: str = "127.0.0.1"
    port: int = 8787
    cooldown_seconds: float = 1800.0
    max_cooldown_seconds: float = 86400.0
    strategy: str = "fallback"
    min_tps: float = None
    failover_on_body: tuple = ()  # substrings that make a 4xx answer a failover
    wait_seconds: float = 0.0   # wait_when_all_fail.max_seconds: 0 means answer at once
    wait_every: float = 5.0     # wait_when_all_fail.every_seconds
    failover_statuses: frozenset = frozenset()
    max_body_bytes: int = 10 * 1024 * 1024
    require_token: bool = True
    allowed_hosts: tuple = ()    # extra names clients may use for the proxy (lowercase, IPv6 bracketed)
    max_connections: int = 256   # concurrent client connections; more get a 503
    receive_timeout: float = 60.0  # seconds to receive a request's head and body once it began
    usage_record: bool = True      # write usage.db
    usage_retention_days: float = 90.0  # rows older than this are pruned; 0 keeps them all
    prices: dict = dataclasses.field(default_factory=dict)  # provider name (lowercase) -> [(glob, Price)]
    request_log: object = None     # a RequestLogSettings, or None (off)
    state_dir: Path = None
    env_path: Path = None
    warnings: list = dataclasses.field(default_factory=list)

    @property
    def url(self):
        return http_url(self.host, self.port)

    def provider(self, name):
        """The provider called ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        return next((p for p in self.providers if p.name.lower() == wanted), None)

    @functools.cached_property
    def has_model_lists(self):
        """Does any provider map a model to a list (model fallback inside a provider)?"""
        return any(isinstance(target, list) for p in self.providers for target in p.models.values())

    @property
    def provider_names(self):
        return [p.name for p in self.providers]


def resolve_config_path(cli_value=None, environ=None):
    """``--config``, else ``$CLAUDE_PROXY_CONFIG``, else config.json beside proxy.py.

    Returns ``(path, explicit)``; ``explicit`` is true when the user named it.
    """
    environ = os.environ if environ is None else environ
    value = cli_value or environ.get(CONFIG_ENV_VAR)
    if value:
        return Path(value).expanduser().resolve(), True
    return APP_DIR / "config.json", False


def load_config(path, environ=None, must_exist=False, reloading=False):
    """Read and validate the config at ``path``.

    A missing file means the built-in defaults, unless ``must_exist`` (the
    user named the file with ``--config`` or ``$CLAUDE_PROXY_CONFIG``).  A
    ``.env`` that exists but cannot be read is a warning (its keys are left
    out), except when ``reloading``: then it is an error, so that a running
    proxy keeps the keys it has rather than losing them to a file an editor
    holds for a moment.
    """
    path = Path(path)
    environ = os.environ if environ is None else environ
    if path.is_file():
        raw = _read_json(path)
        exists = True
    elif path.exists():
        raise ConfigError(f"{path}: is not a file; point --config at a config.json")
    elif must_exist:
        raise ConfigError(f"{path}: no such file; check --config or {CONFIG_ENV_VAR}")
    else:
        raw = copy.deepcopy(DEFAULT_CONFIG)
        exists = False
    env_path = path.parent / ".env"
    dotenv, warnings = read_env_file(env_path, strict=reloading)
    config = _validate(raw, path, exists, env_path)
    config.warnings = warnings
    for name in config.prices:
        if config.provider(name) is None:
            warnings.append(f'{path}: "prices" has prices for "{name}", which is not a configured provider '
                            "(kept for the usage it recorded before)")
    for provider in config.providers:
        _load_keys(provider, environ, dotenv, env_path)
    return config


def _load_keys(provider, environ, dotenv, env_path):
    """The provider's keys: every variable it names, each holding one key or
    several separated by commas (whitespace around them ignored)."""
    keys = []
    for name in provider.key_env_names:
        if environ.get(name):
            value, source = environ[name], "environment"
        elif dotenv.get(name):
            value, source = dotenv[name], str(env_path)
        else:
            continue
        where = "the environment" if source == "environment" else env_path
        entries = [entry.strip() for entry in value.split(",")]
        if not all(entries):
            provider.key_problem = (f"{name} in {where} has an empty entry between its commas; "
                                    "separate several keys with single commas")
            return
        if not all(sendable_in_header(entry) for entry in entries):
            provider.key_problem = (f"{name} in {where} has a character an HTTP header cannot carry "
                                    "(a curly quote or a line break pasted with it?)")
            return
        provider.key_source = provider.key_source or source
        for entry in entries:
            if entry not in keys:
                keys.append(entry)
                provider.key_origins[entry] = name
    provider.api_keys = keys
    provider.api_key = keys[0] if keys else None


def _read_json(path):
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason}); save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        hint = ""
        if text.lstrip().startswith(("//", "/*")) or re.search(r"^\s*//", text, re.M):
            hint = ' (JSON has no comments: use a key such as "_comment": "..." instead)'
        raise ConfigError(
            f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}{hint}"
        ) from None


def _validate(raw, path, exists, env_path):
    problems = []

    def bad(where, message):
        problems.append(f"{path}: {where}{message}")

    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a JSON object {{...}}")
    _unknown_keys(raw, TOP_LEVEL_KEYS, "", bad)

    port = raw.get("proxy_port", 8787)
    if not _is_int(port) or not 0 <= port <= 65535:
        bad("", f'"proxy_port" must be a port number 0-65535, not {port!r}')
    host = raw.get("proxy_host", "127.0.0.1")
    if not isinstance(host, str) or not host:
        bad("", f'"proxy_host" must be a host name or address, not {host!r}')
        host = "127.0.0.1"
    require_token = raw.get("require_token", True)
    if not isinstance(require_token, bool):
        bad("", f'"require_token" must be true or false, not {require_token!r}')
    elif not require_token and not is_loopback(host):
        bad("", f'refusing to listen on {host} without a token: set "require_token": true '
                'or "proxy_host": "127.0.0.1"')
    cooldown = _number(raw, "cooldown_minutes", 30, "", bad, minimum=0)
    max_cooldown = _number(raw, "max_cooldown_minutes", 1440, "", bad, minimum=0)
    strategy = raw.get("strategy", "fallback")
    if strategy not in STRATEGIES:
        bad("", f'"strategy" must be one of {", ".join(STRATEGIES)}, not {strategy!r}')
        strategy = "fallback"
    min_tps = _number(raw, "min_tps", None, "", bad, minimum=0) if "min_tps" in raw else None
    wait = raw.get("wait_when_all_fail", {})
    if not isinstance(wait, dict) or set(wait) - {"max_seconds", "every_seconds"}:
        bad("", '"wait_when_all_fail" must be {"max_seconds": 60, "every_seconds": 5}')
        wait = {}
    wait_seconds = _number(wait, "max_seconds", 0, "wait_when_all_fail: ", bad, minimum=0)
    wait_every = _number(wait, "every_seconds", 5, "wait_when_all_fail: ", bad, minimum=0.1)
    body_triggers = raw.get("failover_on_body", [])
    if not isinstance(body_triggers, list) or not all(isinstance(t, str) and t for t in body_triggers):
        bad("", '"failover_on_body" must be a list of texts, e.g. ["no available accounts"]')
        body_triggers = []
    max_body_mb = _number(raw, "max_body_mb", 10, "", bad, minimum=0.001)
    connect_timeout = _number(raw, "connect_timeout", 10, "", bad, minimum=0.001)
    read_timeout = _number(raw, "read_timeout", 300, "", bad, minimum=0.001)
    statuses = _failover_statuses(raw.get("failover_statuses", list(DEFAULT_FAILOVER_STATUSES)), bad)
    allowed_hosts = _allowed_hosts(raw.get("allowed_hosts", []), bad)
    max_connections = raw.get("max_connections", 256)
    if not _is_int(max_connections) or max_connections < 1:
        bad("", f'"max_connections" must be a whole number of at least 1, not {max_connections!r}')
        max_connections = 256
    receive_timeout = _number(raw, "receive_timeout", 60, "", bad, minimum=0.001)
    usage_record = raw.get("usage_record", True)
    if not isinstance(usage_record, bool):
        bad("", f'"usage_record" must be true or false, not {usage_record!r}')
        usage_record = True
    retention = _number(raw, "usage_retention_days", 90, "", bad, minimum=0)
    prices = _prices(raw.get("prices", {}), bad)

    state_dir = raw.get("state_dir")
    if state_dir is None:
        state_dir = path.parent
    elif isinstance(state_dir, str) and state_dir:
        state_dir = (path.parent / Path(state_dir).expanduser()).resolve()
    else:
        bad("", f'"state_dir" must be a folder path, not {state_dir!r}')
        state_dir = path.parent
    request_log = _request_log(raw.get("request_log"), Path(state_dir), bad)

    providers = []
    entries = raw.get("providers")
    if not isinstance(entries, list) or not entries:
        bad("", '"providers" must be a non-empty list of {"name", "base_url", "api_key_env"}')
        entries = []
    seen = set()
    for index, entry in enumerate(entries):
        provider = _provider(entry, index, connect_timeout, read_timeout, bad)
        if provider is None:
            continue
        if provider.name.lower() in seen:
            bad(f'providers[{index}]: ', f'duplicate provider name "{provider.name}"')
            continue
        seen.add(provider.name.lower())
        providers.append(provider)

    if problems:
        raise ConfigError(problems)
    return Config(
        path=path, exists=exists, providers=providers, host=host, port=port,
        cooldown_seconds=cooldown * 60, max_cooldown_seconds=max_cooldown * 60,
        strategy=strategy, min_tps=min_tps, failover_on_body=tuple(body_triggers),
        wait_seconds=wait_seconds, wait_every=wait_every,
        failover_statuses=statuses,
        max_body_bytes=int(max_body_mb * 1024 * 1024), require_token=require_token,
        allowed_hosts=allowed_hosts, max_connections=max_connections,
        receive_timeout=receive_timeout, state_dir=Path(state_dir), env_path=env_path,
        usage_record=usage_record, usage_retention_days=retention, prices=prices, request_log=request_log,
    )


def _provider(entry, index, connect_timeout, read_timeout, bad):
    where = f"providers[{index}]: "
    if not isinstance(entry, dict):
        bad(where, "must be an object {...}")
        return None
    name = entry.get("name")
    if isinstance(name, str) and name:
        where = f'providers[{index}] ("{name}"): '
    _unknown_keys(entry, PROVIDER_KEYS, where, bad)
    ok = True

    def fail(message):
        nonlocal ok
        ok = False
        bad(where, message)

    if not isinstance(name, str) or not PROVIDER_NAME.match(name):
        fail('"name" is missing or not a simple name (letters, digits, ".", "_", "-")')
    base_url = entry.get("base_url")
    url = _split_url(base_url) if isinstance(base_url, str) else None
    if base_url is None:
        fail('missing "base_url"')
    elif isinstance(base_url, str) and not PRINTABLE_ASCII.match(base_url):
        fail(f'"base_url" must be printable ASCII without spaces (an international domain name in '
             f'its xn-- form, other characters percent-encoded): {base_url!r}')
    elif url is None or url.scheme not in ("http", "https") or not url.hostname:
        fail(f'"base_url" must be an http:// or https:// URL, not {base_url!r}')
    elif url.query or url.fragment:
        fail(f'"base_url" must not have a query or fragment: {base_url!r}')
    elif not _valid_port(url):
        fail(f'"base_url" has a port that is not a number from 1 to 65535: {base_url!r}')
    key_env = entry.get("api_key_env")
    key_names = key_env if isinstance(key_env, list) and key_env else [key_env]
    if key_env is None:
        fail('missing "api_key_env" (the name of the variable that holds the key)')
    else:
        for variable in key_names:
            if not isinstance(variable, str) or not ENV_NAME.match(variable):
                shown = (repr(variable) if not isinstance(variable, str) or len(variable) < 12
                         else repr(mask_key(variable)))
                fail(f'"api_key_env" must be the name of a variable like "MOONSHOT_API_KEY" that holds '
                     f'the key (or a list of such names), not {shown} (a key belongs in .env, not in '
                     'config.json)')
    enabled = entry.get("enabled", True)
    if not isinstance(enabled, bool):
        fail(f'"enabled" must be true or false, not {enabled!r}')
    kind = entry.get("type", "anthropic")
    if kind not in PROVIDER_TYPES:
        fail(f'"type" must be "anthropic" (the Messages API, passed through) or "openai" '
             f'(Chat Completions, translated), not {kind!r}')
        kind = "anthropic"
    options, chat_path = _openai_options(entry.get("openai"), kind, fail)
    auth_header = entry.get("auth_header", "bearer" if kind == "openai" else "both")
    if auth_header not in AUTH_HEADER_CHOICES and not (
            isinstance(auth_header, str) and HEADER_NAME.match(auth_header)
            # "Bearer" or "Both" is a typo, not a header name; a bare key in Authorization is no scheme
            and auth_header.lower() not in {*AUTH_HEADER_CHOICES, "authorization", *PROXY_SET_HEADERS}):
        fail(f'"auth_header" must be one of {", ".join(AUTH_HEADER_CHOICES)}, or the name of the header '
             f'that carries the key as it is (Azure: "api-key"), not {auth_header!r}')
    models = entry.get("models", {})
    if not isinstance(models, dict) or not all(
            isinstance(k, str) and (isinstance(v, str) or (
                isinstance(v, list) and v and all(isinstance(m, str) and m for m in v)))
            for k, v in models.items()):
        fail('"models" must map model globs to a model name or a list of them, tried in order, e.g. '
             '{"claude-*opus*": ["big-model", "other-big-model"], "*": "fast-model"}')
        models = {}
    headers = entry.get("headers", {})
    if not _string_map(headers):
        fail('"headers" must map header names to string values')
    else:
        for header, value in headers.items():
            if not HEADER_NAME.match(header):
                fail(f'"headers": {header!r} is not a valid header name')
            elif header.lower() in PROXY_SET_HEADERS:
                fail(f'"headers": {header!r} is set by the proxy itself and cannot be configured')
            elif not sendable_in_header(value):
                fail(f'"headers": the value of {header!r} has a line break or a character '
                     'an HTTP header cannot carry')
    weight = _number(entry, "weight", 1, where, lambda w, m: fail(m), 0.001)
    retries = _count(entry, "retries", 0, 0, 10, fail)
    threshold = _count(entry, "failure_threshold", 1, 1, 1000, fail)
    backoff = _number(entry, "retry_backoff_ms", 500, where, lambda w, m: fail(m), 0)
    provider_min_tps = (_number(entry, "min_tps", None, where, lambda w, m: fail(m), 0)
                        if "min_tps" in entry else None)
    conn_t = _number(entry, "connect_timeout", connect_timeout, where, lambda w, m: fail(m), 0.001)
    read_t = _number(entry, "read_timeout", read_timeout, where, lambda w, m: fail(m), 0.001)
    if not ok:
        return None
    return Provider(
        name=name, base_url=base_url.rstrip("/"), api_key_env=", ".join(key_names),
        key_env_names=tuple(key_names), enabled=enabled,
        auth_header=auth_header, headers=dict(headers), models=dict(models),
        connect_timeout=conn_t, read_timeout=read_t, type=kind, openai=options, chat_path=chat_path,
        weight=weight, min_tps=provider_min_tps, retries=retries, retry_backoff_ms=backoff,
        failure_threshold=threshold,
    )


def _openai_options(value, kind, fail):
    """``(OpenAIOptions, chat_path)`` from a provider's ``"openai"`` object."""
    from .openai_request import OpenAIOptions

    if value is None:
        return (OpenAIOptions() if kind == "openai" else None), "/chat/completions"
    if kind != "openai":
        fail('"openai" options apply only to a provider with "type": "openai"')
        return None, "/chat/completions"
    if not isinstance(value, dict):
        fail('"openai" must be an object of options, e.g. {"max_output_tokens": 8192}')
        return OpenAIOptions(), "/chat/completions"
    settings = {k: v for k, v in value.items() if not k.startswith("_")}
    chat_path = settings.pop("chat_path", "/chat/completions")
    if not isinstance(chat_path, str) or not chat_path.startswith("/") or not PRINTABLE_ASCII.match(chat_path):
        fail(f'"openai": "chat_path" must be a path starting with "/" (a query is allowed, e.g. '
             f'"/chat/completions?api-version=2024-10-21"), not {chat_path!r}')
        chat_path = "/chat/completions"
    known = {f.name for f in dataclasses.fields(OpenAIOptions)}
    for key in sorted(set(settings) - known):
        fail(f'"openai": unknown option "{key}" (known: {", ".join(sorted(known | {"chat_path"}))})')
        settings.pop(key)
    if isinstance(settings.get("drop_params"), list):
        settings["drop_params"] = tuple(settings["drop_params"])
    try:
        return OpenAIOptions(**settings), chat_path
    except (TypeError, ValueError) as exc:  # a wrong value: the dataclass says which, in one line
        fail(f'"openai": {exc}')
        return OpenAIOptions(), chat_path


def _count(mapping, key, default, low, high, fail):
    """A whole number from ``low`` to ``high`` (the provider's ``fail`` reports one that is not)."""
    value = mapping.get(key, default)
    if not _is_int(value) or not low <= value <= high:
        fail(f'"{key}" must be a whole number from {low} to {high}, not {value!r}')
        return default
    return value


def _prices(value, bad):
    """``prices``: ``{"provider": {"model glob": {"input": 0.3, "output": 1.2, ...}}}`` as
    ``{provider (lowercase): [(glob, Price), ...]}``, in the order written."""
    example = '{"minimax": {"MiniMax-M2*": {"input": 0.3, "output": 1.2}}}'
    if not isinstance(value, dict):
        bad("", f'"prices" must map provider names to model globs to prices, e.g. {example}')
        return {}
    prices = {}
    for provider, models in value.items():
        if provider.startswith("_"):
            continue
        where = f'"prices": "{provider}": '
        if not isinstance(models, dict):
            bad("", f'{where}must map model globs to prices, e.g. {{"MiniMax-M2*": {{"input": 0.3, "output": 1.2}}}}')
            continue
        entries = []
        for glob, price in models.items():
            if glob.startswith("_"):
                continue
            if not isinstance(price, dict):
                bad("", f'{where}"{glob}" must be {{"input": ..., "output": ..., "cache_read": ..., '
                        f'"cache_write": ...}} in US dollars per million tokens, not {price!r}')
                continue
            figures, ok = {}, True
            for key, number in price.items():
                if key.startswith("_"):
                    continue
                if key not in PRICE_KEYS:
                    bad("", f'{where}"{glob}": unknown key "{key}" (known keys: {", ".join(PRICE_KEYS)})')
                    ok = False
                elif isinstance(number, bool) or not isinstance(number, (int, float)) \
                        or not math.isfinite(number) or number < 0:
                    bad("", f'{where}"{glob}": "{key}" must be a number of US dollars per million tokens, '
                            f'at least 0, not {number!r}')
                    ok = False
                else:
                    figures[key] = float(number)
            for key in ("input", "output"):
                if ok and key not in figures:
                    bad("", f'{where}"{glob}": missing "{key}" (US dollars per million tokens)')
                    ok = False
            if ok:
                entries.append((glob, Price(**figures)))
        prices[provider.lower()] = entries
    return prices


def price_of(prices, provider, model):
    """The :class:`Price` for ``model`` at ``provider`` (first matching glob, case-insensitive), or None."""
    if not provider or model is None:
        return None
    lowered = model.lower()
    for glob, price in prices.get(provider.lower(), ()):
        if fnmatch.fnmatchcase(lowered, glob.lower()):
            return price
    return None


def _request_log(value, state_dir, bad):
    """``request_log``: None (off) or ``{"path": ..., "bodies": ..., "max_mb": ..., "keep": ...,
    "max_body_kb": ...}``; a relative path is in the state directory."""
    if value is None or value is False:
        return None
    example = '{"path": "requests.jsonl", "bodies": false, "max_mb": 50, "keep": 5}'
    if not isinstance(value, dict):
        bad("", f'"request_log" must be an object like {example}, or null (off)')
        return None
    _unknown_keys(value, REQUEST_LOG_KEYS, '"request_log": ', bad)
    path = value.get("path", "requests.jsonl")
    if not isinstance(path, str) or not path:
        bad("", f'"request_log": "path" must be a file path, not {path!r}')
        return None
    bodies = value.get("bodies", False)
    if not isinstance(bodies, bool):
        bad("", f'"request_log": "bodies" must be true or false, not {bodies!r}')
    max_mb = _number(value, "max_mb", 50, '"request_log": ', bad, minimum=0.001)
    keep = value.get("keep", 5)
    if not _is_int(keep) or keep < 0:
        bad("", f'"request_log": "keep" must be a whole number of at least 0, not {keep!r}')
        keep = 5
    max_body_kb = _number(value, "max_body_kb", 256, '"request_log": ', bad, minimum=0)
    return RequestLogSettings(path=(state_dir / Path(path).expanduser()).resolve(), bodies=bodies is True,
                              max_bytes=int(max_mb * 1024 * 1024), keep=keep,
                              max_body_bytes=int(max_body_kb * 1024))


def _unknown_keys(mapping, known, where, bad):
    for key in mapping:
        if key not in known and not key.startswith("_"):
            hint = ", ".join(sorted(known))
            bad(where, f'unknown key "{key}" (known keys: {hint}; prefix a key with "_" for a comment)')


def _number(mapping, key, default, where, bad, minimum):
    value = mapping.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < minimum:
        bad(where, f'"{key}" must be a number of at least {minimum:g}, not {value!r}')
        return default
    return float(value)


def _failover_statuses(value, bad):
    statuses = set()
    if not isinstance(value, list):
        value = [value]
    for item in value:
        if _is_int(item) and 100 <= item <= 599:
            statuses.add(item)
        elif isinstance(item, str) and re.fullmatch(r"[1-5]xx", item.lower()):
            first = int(item[0]) * 100
            statuses.update(range(first, first + 100))
        else:
            bad("", f'"failover_statuses" takes status codes like 429 or classes like "5xx", not {item!r}')
    return frozenset(statuses)


_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?\Z")


def _allowed_hosts(value, bad):
    """``allowed_hosts``: names or addresses, as a client puts them in ``Host``
    (without the port), lowercased; an IPv6 address gets its brackets."""
    if not isinstance(value, list):
        value = [value]
    names = []
    for item in value:
        text = item.strip().strip("[]") if isinstance(item, str) else ""
        try:
            names.append(f"[{ipaddress.IPv6Address(text).compressed}]")
            continue
        except ValueError:  # not an IPv6 address: a name or an IPv4 address
            pass
        if _HOST_NAME.match(text):
            names.append(text.lower())
        else:
            bad("", f'"allowed_hosts" takes host names or addresses without a port, '
                    f'like "my-laptop.local", not {item!r}')
    return tuple(names)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


PRINTABLE_ASCII = re.compile(r"[!-~]+\Z")


def _split_url(text):
    try:
        url = urlsplit(text)
        url.hostname  # noqa: B018 -- parsed lazily; a malformed address raises here
    except ValueError:  # not a URL: the caller says what is wrong
        return None
    return url


def _valid_port(url):
    try:
        port = url.port
    except ValueError:  # a port that is not a number
        return False
    return port is None or port > 0


def _string_map(value):
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def http_url(host, port):
    """``http://host:port``, with an IPv6 address in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def mask_key(key):
    """A key as it may be shown: its last four characters at most."""
    return "****" + key[-4:] if len(key) >= 12 else "****"


def is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: only "localhost" counts as loopback
        return False


# --- .env -------------------------------------------------------------------

_ENV_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\", "$": "$"}


def env_file_exposed(mode, os_name=None):
    """True if a ``.env`` with file mode ``mode`` can be read by other users.

    Only POSIX permission bits say that; on Windows (``os_name`` ``"nt"``) the
    mode does not reflect the file's access list, so the answer is False.
    """
    return (os.name if os_name is None else os_name) == "posix" and bool(mode & 0o044)


def read_env_file(path, strict=False):
    """Parse a ``.env`` file as people write them; a missing file is empty.

    Returns ``(values, warnings)``.  Handles comments, blank lines, ``export``,
    single and double quotes, inline ``# comments``, a UTF-8 BOM and CRLF.
    A file that cannot be read is a warning, or with ``strict`` a ``ConfigError``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:  # no .env: keys come from the environment only
        return {}, []
    except (OSError, UnicodeDecodeError) as exc:
        if strict:
            raise ConfigError(f"{path}: cannot read it ({exc})") from None
        return {}, [f"{path}: cannot read it ({exc}); keys from it are ignored"]
    return parse_env(text, path)


def parse_env(text, origin=".env"):
    values, warnings = {}, []
    for number, line in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _ENV_LINE.match(line)
        if not match:
            warnings.append(f"{origin}: line {number} is not KEY=value; ignored")
            continue
        key, value = match.groups()
        parsed = _env_value(value)
        if parsed is None:
            warnings.append(f"{origin}: line {number}: unterminated quote in {key}; ignored")
            continue
        values[key] = parsed
    return values, warnings


def _env_value(value):
    if value[:1] in ("'", '"'):
        quote = value[0]
        out, i = [], 1
        while i < len(value):
            char = value[i]
            if char == quote:
                return "".join(out)
            if char == "\\" and quote == '"' and i + 1 < len(value):
                i += 1
                out.append(_ESCAPES.get(value[i], "\\" + value[i]))
            else:
                out.append(char)
            i += 1
        return None
    comment = re.search(r"\s#", value)
    if comment:
        value = value[: comment.start()]
    return value.strip()
