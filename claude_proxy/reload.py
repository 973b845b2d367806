"""Config hot reload: noticing that ``config.json`` or ``.env`` changed, and
saying what a new config changes.

The daemon polls both files' modification time and size (:class:`ConfigWatcher`,
about once a second: two ``stat`` calls) and reloads on a change, on
``proxy.py reload`` (``POST /reload``) and on SIGHUP.  The swap itself is
:meth:`http_server.ProxyServer.reload`: the new config is read and checked
whole first; a broken one changes nothing.

What a reload cannot change: the address and port the daemon listens on and
its state directory (:func:`restart_only`); the usage record and the request
log being on or off, and where the log goes, since each owns a file and a
writer thread.  Those are reported ("proxy_port changed: restart to apply")
and the rest is applied.
"""

import dataclasses
import logging
import os
import threading
import time

from .config import is_loopback
from .errors import ConfigError
from .wording import plural

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0    # how often the files are looked at
SETTLE_SECONDS = 0.1  # a file still changing after this is looked at again (an editor mid-save)

#: Config fields a reload cannot change, with the name the config file gives them.
RESTART_ONLY = {"host": "proxy_host", "port": "proxy_port", "state_dir": "state_dir",
                "usage_record": "usage_record", "request_log": "request_log"}
#: Config fields under another name in the file (the rest have the same name).
FILE_NAMES = {"cooldown_seconds": "cooldown_minutes", "max_cooldown_seconds": "max_cooldown_minutes",
              "wait_seconds": "wait_when_all_fail", "wait_every": "wait_when_all_fail",
              "max_body_bytes": "max_body_mb"}
#: Config fields that are not settings (where it came from, what it said while loading).
NOT_SETTINGS = {"path", "exists", "providers", "env_path", "warnings"}
#: Provider fields that say nothing about it in their own right (the keys are compared as keys).
PROVIDER_NOT_SETTINGS = {"name", "api_key", "api_keys", "key_env_names", "key_source", "key_problem",
                         "key_origins"}


def file_signature(path):
    """What changes when ``path`` is written: its modification time and size (None: no file)."""
    try:
        info = os.stat(path)
    except OSError:  # no such file (yet): that is a state too
        return None
    return info.st_mtime_ns, info.st_size


class ConfigWatcher:
    """Calls ``on_change()`` in its own thread when one of ``paths`` changes."""

    def __init__(self, paths, on_change, interval=POLL_SECONDS):
        self.paths = list(paths)
        self.on_change = on_change
        self.interval = interval
        self._seen = self._signatures()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="config-watcher", daemon=True)
        self._thread.start()

    def mark_seen(self):
        """The files as they are now have been read (a reload asked for otherwise)."""
        self._seen = self._signatures()

    def try_again(self):
        """The last read failed: read the files again at the next poll, changed or not
        (an editor may have held one for a moment; a broken one costs a parse a second)."""
        self._seen = None

    def _signatures(self):
        return [file_signature(path) for path in self.paths]

    def _run(self):
        while not self._stop.wait(self.interval):
            current = self._signatures()
            if current == self._seen:
                continue
            while not self._stop.wait(SETTLE_SECONDS):  # let a save that is under way finish
                settled = self._signatures()
                if settled == current:
                    break
                current = settled
            self._seen = current
            try:
                self.on_change()
            except Exception:  # a bug in a reload must not end the watching
                log.exception("config reload failed")

    def close(self):
        self._stop.set()
        self._thread.join(5)


def restart_only(running, new):
    """``"proxy_port changed: restart to apply"`` for each setting of ``new`` that
    differs from what the ``running`` config uses and that a reload cannot change."""
    return [f"{name} changed: restart to apply" for field, name in RESTART_ONLY.items()
            if getattr(running, field) != getattr(new, field)]


def keep_restart_only(running, new):
    """``new`` with the settings a reload cannot change as ``running`` has them.

    Raises :class:`ConfigError` when that would answer API requests without a
    token on an address that is not loopback: the file's own check passes a
    ``"require_token": false`` with a loopback ``proxy_host``, but the proxy
    listens where it started until a restart."""
    kept = dataclasses.replace(new, **{field: getattr(running, field) for field in RESTART_ONLY})
    if not kept.require_token and not is_loopback(kept.host):
        raise ConfigError(f'{new.path}: refusing "require_token": false while the proxy listens on '
                          f"{kept.host} (until a restart): keep \"require_token\": true, or restart it "
                          f"to listen on {new.host}")
    return kept


def describe_changes(old, new):
    """What ``new`` changes from ``old``, in short phrases for the log: providers added,
    removed and reordered, what changed in each (keys by the variable that holds
    them, never a key), and the settings changed."""
    changes = []
    old_names, new_names = [p.name for p in old.providers], [p.name for p in new.providers]
    added = [name for name in new_names if name not in old_names]
    removed = [name for name in old_names if name not in new_names]
    if added:
        changes.append(f"providers added: {', '.join(added)}")
    if removed:
        changes.append(f"providers removed: {', '.join(removed)}")
    kept_old = [name for name in old_names if name in new_names]
    kept_new = [name for name in new_names if name in old_names]
    if kept_old != kept_new:
        changes.append(f"provider order now {', '.join(new_names)}")
    for provider in new.providers:
        before = old.provider(provider.name)
        if before is not None and before.name == provider.name:
            changes.extend(f"{provider.name}: {change}" for change in _provider_changes(before, provider))
    settings = [_setting_change(field.name, getattr(old, field.name), getattr(new, field.name))
                for field in dataclasses.fields(old)
                if field.name not in NOT_SETTINGS and field.name not in RESTART_ONLY
                and getattr(old, field.name) != getattr(new, field.name)]
    changes.extend(dict.fromkeys(settings))  # wait_when_all_fail once, though it is two fields
    return changes


def _provider_changes(old, new):
    changes = []
    for field in dataclasses.fields(old):
        if field.name in PROVIDER_NOT_SETTINGS:
            continue
        before, after = getattr(old, field.name), getattr(new, field.name)
        if before != after:
            changes.append(_setting_change(field.name, before, after))
    gained = [key for key in new.api_keys if key not in old.api_keys]
    lost = [key for key in old.api_keys if key not in new.api_keys]
    if gained:
        changes.append(f"{plural(len(gained), 'key')} added ({_variables(new, gained)})")
    if lost:
        changes.append(f"{plural(len(lost), 'key')} removed ({_variables(old, lost)})")
    if new.key_problem and new.key_problem != old.key_problem:
        changes.append(new.key_problem)
    return changes


def _variables(provider, keys):
    names = dict.fromkeys(provider.key_origins.get(key, provider.api_key_env) for key in keys)
    return ", ".join(names)


def _setting_change(field, before, after):
    name = FILE_NAMES.get(field, field)
    plain = (str, int, float, bool, type(None))
    if isinstance(before, plain) and isinstance(after, plain) and field not in FILE_NAMES:
        return f"{name} {_plain(before)} -> {_plain(after)}"
    return f"{name} changed"


def _plain(value):
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def local_time(epoch):
    """``HH:MM`` of ``epoch`` in local time, for "config error since HH:MM"."""
    return time.strftime("%H:%M", time.localtime(epoch))
