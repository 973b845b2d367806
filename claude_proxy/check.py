"""``proxy.py check [--live]``: the config and ``.env`` checked, and each provider tried."""

import dataclasses
import json
import os
import shlex
import sys
import threading
import time
from pathlib import Path

from . import __version__
from .config import env_file_exposed, load_config, read_env_file, resolve_config_path
from .errors import EXIT_FAILURE, EXIT_OK, ConfigError, UpstreamError, UsageError
from .reload import POLL_SECONDS, file_signature, local_time
from .state import StatePaths, state_dir_problem
from .wording import plural

LIVE_TIMEOUT = 30.0      # for one `check --live` request to a provider
LIVE_MODEL = "claude-haiku-4-5"  # what `check --live` asks for; the provider's model map applies
STALE_AFTER = 3 * POLL_SECONDS   # a daemon that has not read a file changed this long ago missed it


def cmd_check(args):
    path, explicit = resolve_config_path(args.config)
    if args.dump:
        return dump_models(path, explicit, args.dump, args.timeout)
    return check(path, explicit, live=args.live, live_timeout=args.timeout)


def dump_models(path, explicit, name, timeout=LIVE_TIMEOUT, out=None):
    """Print a provider's model list as it sends it (pretty JSON when it is JSON)."""
    from .daemon import known_provider
    from .upstream import Upstreams

    out = out or sys.stdout
    config = load_config(path, must_exist=explicit)
    provider = known_provider(config, name)
    if not provider.api_key:
        raise UsageError(f"provider {provider.name} has no key: {provider.missing_key(config.env_path)}")
    bounded = dataclasses.replace(provider, connect_timeout=min(provider.connect_timeout, timeout),
                                  read_timeout=min(provider.read_timeout, timeout))
    upstreams = Upstreams([bounded])
    try:
        status, body, _ = fetch_model_list(upstreams, bounded)
    except UpstreamError as exc:
        raise UsageError(f"provider {provider.name} is unreachable: {exc.kind} "
                         f"({_scrub(exc.detail, provider)})") from None
    finally:
        upstreams.close()
    text = _scrub(body.decode("utf-8", "replace"), provider)
    try:
        text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:  # not JSON: shown as it came
        pass
    print(text, file=out)
    if status != 200:
        print(f"claude-proxy: provider {provider.name} answered {status} for its model list", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def check(path, explicit, live=False, environ=None, out=None, live_timeout=LIVE_TIMEOUT):
    """Validate the config and .env, print every finding; 0 unless there is a problem."""
    out = out or sys.stdout
    environ = os.environ if environ is None else environ
    problems, warnings_ = [], []

    def report(kind, message):
        if kind == "problem":
            problems.append(message)
        elif kind == "warning":
            warnings_.append(message)
        print(f"{kind}: {message}", file=out, flush=True)

    try:
        config = load_config(path, environ=environ, must_exist=explicit)
    except ConfigError as exc:
        for problem in exc.problems:
            report("problem", problem)
        _compare_with_daemon(path, None, report)
        return _check_summary(problems, warnings_, out)

    if config.exists:
        report("ok", f"config {config.path}")
    else:
        report("warning", f"no config at {config.path}: using the built-in defaults "
                          "(copy config.example.json to config.json to change them)")
    env_exists = config.env_path.is_file()
    report("ok" if env_exists else "warning",
           f".env {config.env_path}" + ("" if env_exists else " does not exist (keys come from "
                                                               "the environment only)"))
    if env_exists:
        try:
            mode = config.env_path.stat().st_mode
        except OSError:  # gone meanwhile, or not ours to stat: the read below reports it
            mode = 0
        if env_file_exposed(mode):
            report("warning", f".env {config.env_path} can be read by other users (mode "
                              f"{mode & 0o777:04o}); run `chmod 600 {shlex.quote(str(config.env_path))}`")
    for warning in config.warnings:
        report("warning", warning)
    dotenv, _ = read_env_file(config.env_path)
    used = {p.api_key_env for p in config.providers}
    for name in dotenv:
        if name not in used and ("KEY" in name or "TOKEN" in name):
            report("warning", f"{config.env_path}: {name} is not the api_key_env of any provider "
                              f"(they use {', '.join(sorted(used))}); a typo?")
    for p in config.providers:
        if not p.enabled:
            report("ok", f"provider {p.name}: disabled")
        elif p.api_key:
            source = "the environment" if p.key_source == "environment" else p.key_source
            report("ok", f"provider {p.name}: {p.base_url}, key {p.api_key_env} from {source}")
        else:
            report("warning", f"provider {p.name}: {p.missing_key(config.env_path)}; it will be skipped")
    if not any(p.usable for p in config.providers):
        report("problem", "no provider is usable: set at least one provider's key")
    state_problem = state_dir_problem(config.state_dir, config.path)
    if state_problem:
        report("problem", state_problem)
    if not config.require_token:
        report("ok", "require_token is false: the proxy accepts any key")
    elif not state_problem:
        token = StatePaths(config.state_dir).token
        report("ok", f"client token: {token} " + ("(`proxy.py env` hands it to clients)" if token.exists()
                                                   else "(created on first start; `proxy.py env` "
                                                        "hands it to clients)"))

    _compare_with_daemon(path, config, report)
    if live:
        for p, (kind, message) in zip(config.providers, live_check(config, live_timeout)):
            report(kind, f"provider {p.name}: {message}")
    return _check_summary(problems, warnings_, out)


def _compare_with_daemon(path, config, report):
    """Warn when the daemon running on this config file is not using it as it is now:
    its last reload failed, or it has not read the file since it changed.  ``config``
    is None when the file has problems."""
    from .daemon import probe, state_dir_of_broken_config

    state_dir = config.state_dir if config is not None else state_dir_of_broken_config(path)
    current = probe(StatePaths(state_dir), config)
    status = current.status
    if not current.running or status.get("config") != str(path):
        return
    error = status.get("config_error")
    if error:
        fixed = "; the file is sound now: run `proxy.py reload`" if config is not None else ""
        report("warning", f"the running proxy (pid {status['pid']}) is not using this file: its "
                          f"reload at {local_time(error['since'])} failed ({error['message']}), so it "
                          f"goes on with the config it had{fixed}")
        return
    loaded = status.get("config_loaded_at")
    changed = max((file_signature(p) or (0,))[0] for p in (Path(path), Path(path).parent / ".env")) / 1e9
    if isinstance(loaded, (int, float)) and changed > loaded + STALE_AFTER:
        report("warning", f"the running proxy (pid {status['pid']}) has not read this file since it "
                          "changed; run `proxy.py reload`")


def _check_summary(problems, warnings_, out):
    verdict = "config has problems" if problems else "config is usable"
    print(f"check: {verdict} ({plural(len(problems), 'problem')}, "
          f"{plural(len(warnings_), 'warning')})", file=out)
    return EXIT_FAILURE if problems else EXIT_OK


def live_check(config, timeout=LIVE_TIMEOUT):
    """One small request to each provider, concurrently; ``(kind, message)`` per provider.

    The request is ``POST /v1/messages`` with ``max_tokens: 1`` and a one-word
    prompt, for ``claude-haiku-4-5`` through the provider's model map: it
    proves reachability, the key and the model mapping for a few tokens.
    The whole check gives up after ``timeout`` seconds, whatever the
    providers' own connect and read timeouts are: a provider still
    connecting, silent or trickling by then is reported as not answering.
    """
    from .upstream import Upstreams

    bounded = [dataclasses.replace(p, connect_timeout=min(p.connect_timeout, timeout),
                                   read_timeout=min(p.read_timeout, timeout)) for p in config.providers]
    upstreams = Upstreams(bounded)
    results = [("problem", f"no answer within {timeout:g} seconds (--timeout)")] * len(bounded)

    def run(index, provider):
        results[index] = _live_check_one(upstreams, provider)

    # Daemon threads: one that is still waiting at the deadline must not hold up the exit.
    threads = [threading.Thread(target=run, args=item, daemon=True) for item in enumerate(bounded)]
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    upstreams.close()
    return list(results)


MODEL_LIST_LIMIT = 4 * 1024 * 1024
#: Statuses that mean "this provider has no model list here": check with a message instead.
NO_MODEL_LIST = (404, 405, 501)


def _live_check_one(upstreams, provider):
    if not provider.enabled:
        return "ok", "skipped (disabled)"
    if not provider.api_key:
        return "warning", "skipped (no key)"
    listed = _model_list_check(upstreams, provider)
    return listed if listed is not None else _message_check(upstreams, provider)


def fetch_model_list(upstreams, provider):
    """``(status, body, milliseconds)`` of the provider's model list (``GET /v1/models``,
    or ``GET /models`` for an OpenAI-type provider).  Raises UpstreamError."""
    from .upstream import upstream_headers

    if provider.type == "openai":
        target = provider.base_path + "/models"
        headers = [(n, v) for n, v in openai_headers(provider) if n.lower() != "content-length"]
    else:
        target = provider.base_path + "/v1/models?limit=1000"
        headers = upstream_headers(provider, [("anthropic-version", "2023-06-01"),
                                              ("user-agent", f"claude-proxy/{__version__} check")], None)
    started = time.monotonic()
    response = upstreams.send(provider, "GET", target, headers, b"")
    body = response.read_all(MODEL_LIST_LIMIT)
    return response.status, body, (time.monotonic() - started) * 1000


def openai_headers(provider):
    from .openai_forward import request_headers

    return request_headers(provider, 0, stream=False)


def _model_list_check(upstreams, provider):
    """Reachability, the key and every model-map target, from the provider's model list;
    None when it has no model list (the caller sends a message instead)."""
    try:
        status, body, ms = fetch_model_list(upstreams, provider)
    except UpstreamError as exc:
        return "problem", f"unreachable at {provider.base_url}: {exc.kind} ({_scrub(exc.detail, provider)})"
    if status in NO_MODEL_LIST:
        return None
    detail = _scrub(_error_detail(body), provider)
    if status in (401, 403):
        return "problem", f"key rejected ({status}{detail}) after {ms:.0f} ms; check {provider.api_key_env}"
    if status == 429 or status >= 500:
        return "warning", (f"reachable, but answering {status}{detail} right now ({ms:.0f} ms); "
                           "the proxy fails over from it")
    served = model_ids(body)
    if status != 200 or served is None:
        return None  # something else than a model list: ask it a question instead
    wanted = sorted({m for target in provider.models.values()
                     for m in ([target] if isinstance(target, str) else target)})
    missing = [m for m in wanted if m not in served]
    if missing:
        return "problem", (f"reachable, key accepted ({ms:.0f} ms), but it does not list "
                           f"{', '.join(missing)} among its {len(served)} models: a typo in \"models\"? "
                           f"(`proxy.py check --live --dump {provider.name}` lists them)")
    mapped = f"; the {len(wanted)} mapped model{'s are' if len(wanted) != 1 else ' is'} among them" \
        if wanted else ""
    return "ok", f"reachable, key accepted, {len(served)} models listed in {ms:.0f} ms{mapped}"


def model_ids(body):
    """The model ids of a model list (Anthropic's or OpenAI's ``{"data": [{"id": ...}]}``), or None."""
    try:
        data = json.loads(body).get("data")
    except (ValueError, AttributeError, UnicodeDecodeError):  # not a JSON object: not a model list
        return None
    if not isinstance(data, list):
        return None
    return {entry["id"] for entry in data if isinstance(entry, dict) and isinstance(entry.get("id"), str)}


def _message_check(upstreams, provider):
    """One tiny message (max_tokens 1) for the mapped haiku model: reachability, key, model."""
    from .upstream import upstream_headers

    model = provider.map_model(LIVE_MODEL)
    ping = {"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "ping"}]}
    if provider.type == "openai":  # the same question in Chat Completions, where it is asked
        from .openai_forward import request_headers
        from .openai_request import to_chat_completions

        chat, _ = to_chat_completions(ping, model, provider.openai, stream=False)
        body = json.dumps(chat).encode()
        target = provider.base_path + provider.chat_path
        headers = request_headers(provider, len(body), stream=False)
    else:
        body = json.dumps(ping).encode()
        target = provider.base_path + "/v1/messages"
        client_headers = [("anthropic-version", "2023-06-01"), ("content-type", "application/json"),
                          ("user-agent", f"claude-proxy/{__version__} check")]
        headers = upstream_headers(provider, client_headers, len(body))
    started = time.monotonic()
    try:
        response = upstreams.send(provider, "POST", target, headers, body)
        answer = response.read_all(64 * 1024)
    except UpstreamError as exc:
        return "problem", f"unreachable at {provider.base_url}: {exc.kind} ({_scrub(exc.detail, provider)})"
    ms = (time.monotonic() - started) * 1000
    detail = _scrub(_error_detail(answer), provider)
    status = response.status
    if 200 <= status < 300:
        return "ok", (f"reachable, key accepted, model {model} answered in {ms:.0f} ms "
                      "(it has no model list to check the model map against)")
    if status in (401, 403):
        return "problem", f"key rejected ({status}{detail}) after {ms:.0f} ms; check {provider.api_key_env}"
    if status == 429 or status >= 500:
        return "warning", (f"reachable, but answering {status}{detail} right now ({ms:.0f} ms); "
                           "the proxy fails over from it")
    return "problem", (f"request refused ({status}{detail}) after {ms:.0f} ms; check base_url and "
                       f"the model map (sent model {model})")


def _error_detail(body):
    try:
        error = json.loads(body).get("error", {})
        text = f"{error.get('type', '')}: {error.get('message', '')}".strip(": ")
    except (ValueError, AttributeError):  # not a JSON error body: the status says enough
        return ""
    return f" {text[:200]}" if text else ""


def _scrub(text, provider):
    """Provider messages sometimes quote the key they were sent; never show any of its keys."""
    for key in provider.api_keys:
        text = text.replace(key, "***")
    return text
