"""What ``proxy.py top`` shows: the daemon's state laid out as lines of text.

One layout for both forms of the view.  The full-screen view
(:mod:`top`) fits it to the window: a header (where, since when, how this
session uses the proxy), one row per provider with its state coloured, the
requests in flight, the last requests, and the keys at the bottom; it never
scrolls (what does not fit is left out, the requests first).  ``top
--once`` prints the same without the selection and the keys, every line
whole, colour only on a terminal.

A line is built as segments ``(text, style)`` so that it can be cut to the
window's width by what shows, and painted or not: ``style`` is one of
:data:`STYLES` or None.  Nothing here reads a clock or the network: the
caller passes the state and the time.
"""

import dataclasses
import time

from .reload import local_time
from .status import format_status
from .wording import describe_keys, describe_provider_state, format_duration, plural

#: SGR parameters (ECMA-48) of each style.
STYLES = {"bold": "1", "dim": "2", "reverse": "7", "red": "31", "green": "32", "yellow": "33",
          "grey": "90", "heading": "1;4"}
#: A provider state's colour: ready green, cooling amber, disabled grey, no key red.
STATE_STYLES = {"ready": "green", "cooling": "yellow", "disabled": "grey", "no_key": "red"}
ONCE_RECENT = 10  # the last requests a snapshot lists
RECENT_ROOM = 3   # rows the last requests keep on a full screen: a blank, the heading, one request
KEYS_HELP = "q quit  up/down select  d disable/enable  c clear cooldown"
GAP = "  "


def paint(segments, colour, width=None):
    """The line ``segments`` make, cut to ``width`` characters (as shown), with SGR escapes if ``colour``."""
    out, room = [], width
    for text, style in segments:
        if room is not None:
            text = text[:room]
            room -= len(text)
        if not text:
            continue
        out.append(f"\x1b[{STYLES[style]}m{text}\x1b[0m" if colour and style else text)
    return "".join(out)


def compact(number):
    """A token count in a few characters: 950, 12.3k, 4.1M."""
    if number is None:
        return "-"
    if number < 10_000:
        return str(number)
    if number < 1_000_000:
        return f"{number / 1000:.1f}k"
    return f"{number / 1_000_000:.1f}M"


def size(count):
    """Bytes in a few characters: 512 B, 4.2 KB, 1.3 MB."""
    if count < 1024:
        return f"{count} B"
    if count < 1024 * 1024:
        return f"{count / 1024:.1f} KB"
    return f"{count / 1024 / 1024:.1f} MB"


def seconds(value):
    return "-" if value is None else f"{value:.1f}s"


def describe_mode(session):
    """This session's use of the proxy in a few words (the header already names the address)."""
    mode = session["mode"]
    if mode == "fallback":
        return "fallback"
    if mode == "pinned":
        return f"pinned to {session['provider']}"
    if mode == "strategy":
        return f"strategy {session['strategy']}"
    if mode == "normal":
        return "not through the proxy (ANTHROPIC_BASE_URL is not set)"
    return f"not through this proxy (ANTHROPIC_BASE_URL={session['base_url']})"


@dataclasses.dataclass
class Scene:
    """Everything one frame shows besides the daemon's state.

    ``url`` is where the daemon was reached; ``today`` is what :func:`status.usage_today` gives (a list of rows, or
    ``{"error": ...}``); ``age`` is how long ago the status snapshot came (the
    countdowns go on by that much); ``wall_now`` is the time for ages of
    requests (epoch seconds; None in a snapshot, which uses what the daemon
    said).  ``selected`` names the provider the keys act on; ``interactive``
    is the full-screen form."""

    target: object
    session: dict
    url: str = None
    today: object = None
    token_ok: bool = None
    age: float = 0.0
    wall_now: float = None
    selected: str = None
    message: str = None
    interactive: bool = False


@dataclasses.dataclass
class Layout:
    """The lines of a frame, by part: the header and providers are kept whole,
    the requests are cut to the room left, the footer is always at the bottom."""

    top: list
    in_flight: list = dataclasses.field(default_factory=list)
    recent: list = dataclasses.field(default_factory=list)
    footer: list = dataclasses.field(default_factory=list)

    def fit(self, height=None):
        """The lines (segment lists) of the whole frame, in at most ``height`` rows (None: all)."""
        if height is None:
            return [*self.top, *self.in_flight, *self.recent, *self.footer]
        footer = self.footer[max(0, len(self.footer) - height):]  # the keys line last of all
        room = height - len(footer)
        top = self.top[:room]
        room -= len(top)
        # The requests in flight before the last ones, which keep their heading and a row.
        recent_share = min(len(self.recent), RECENT_ROOM)
        flight = self.in_flight[:max(room - recent_share, min(room, RECENT_ROOM))]
        room -= len(flight)
        recent = self.recent[:room]
        room -= len(recent)
        return [*top, *flight, *recent, *([[]] * room), *footer]


def layout(state, scene):
    """The :class:`Layout` of a :class:`feed_reader.LiveState` (a daemon down, or running)."""
    if state.status is None:
        return Layout(top=_down_lines(state, scene), footer=_footer(scene))
    status = state.status
    top = _header(state, scene)
    notes = _notes(state, scene)
    if notes:
        top.append([("  " + "; ".join(notes), "yellow")])
    top.append([])
    top.extend(_provider_table(status.get("providers") or [], scene))
    return Layout(top=top, in_flight=_in_flight(state, scene), recent=_recent(state, scene),
                  footer=_footer(scene))


def _down_lines(state, scene):
    current = state.down
    if current is None:
        return [[("claude-proxy: looking for the proxy...", "dim")]]
    if current.running:  # it answers /status but gave no feed: a daemon from before `top`
        return [[(f"claude-proxy {current.status.get('version', '?')} is running on {current.url} "
                  f"(pid {current.status.get('pid')}) but has no live feed (GET /events)", "yellow")],
                [("  it is older than this proxy.py: restart it (proxy.py stop, then claude-fb) to watch it live",
                  None)]]
    text = format_status(current, scene.target, scene.session, current.silent)
    lines = text.splitlines()
    style = "yellow" if current.silent else "red"
    result = [[(lines[0], style)]] + [[(line, None)] for line in lines[1:]]
    if scene.interactive:
        result += [[], [("  watching for it: trying again every second", "dim")]]
    return result


def _header(state, scene):
    status = state.status
    url = scene.url or status.get("listen")
    return [[(f"claude-proxy {status.get('version', '?')}", "bold"),
             (f" on {url} (pid {status.get('pid')}), up {format_duration(status.get('uptime_seconds') or 0)}, "
              f"strategy {status.get('strategy', 'fallback')}", None)],
            [("  this session: ", None), (describe_mode(scene.session), "bold")]]


def _notes(state, scene):
    """What needs saying besides the table: waiting requests, missed events, trouble."""
    status = state.status
    notes = []
    error = status.get("config_error")
    if error:
        notes.append(f"config error since {local_time(error['since'])}: {error['message']} "
                     "(the proxy goes on with the config it had)")
    notes.extend(status.get("restart_needed") or ())
    if status.get("waiting_requests"):
        notes.append(f"{plural(status['waiting_requests'], 'request')} waiting for a provider to recover")
    if status.get("dropped"):
        notes.append(f"{plural(status['dropped'], 'event')} missed (this view fell behind)")
    if scene.token_ok is False:
        notes.append("this session's ANTHROPIC_AUTH_TOKEN is not the proxy's token (its requests get a 401): "
                     "run claude-fb again")
    if isinstance(scene.today, dict):
        notes.append(f"today: {scene.today['error']}")
    record = status.get("usage_record") or {}
    if record.get("problem"):
        notes.append(f"usage record: {record['problem']}")
    return notes


def _aged(row, age):
    """``row`` with its countdowns run on by ``age`` seconds (between snapshots)."""
    if not age:
        return row
    row = dict(row)
    if row.get("cooldown_seconds_left"):
        row["cooldown_seconds_left"] = max(0.0, row["cooldown_seconds_left"] - age)
    disabled = row.get("disabled_by_command")
    if disabled and disabled.get("seconds_left") is not None:
        row["disabled_by_command"] = {**disabled, "seconds_left": max(0.0, disabled["seconds_left"] - age)}
    return row


def _speed(row):
    """The provider's measured speed with the most answers behind it, or None."""
    measured = [s for s in (row.get("speed") or {}).values() if s.get("samples")]
    return max(measured, key=lambda s: s["samples"]) if measured else None


def _today_of(today, name):
    if not isinstance(today, list):
        return None
    return next((r for r in today if (r.get("provider") or "").lower() == name.lower()), None)


#: The provider table's columns: heading, and whether the cells are numbers (right-aligned).
COLUMNS = (("PROVIDER", False), ("STATE", False), ("REQS", True), ("FAIL", True), ("IN TODAY", True),
           ("OUT TODAY", True), ("1ST TOKEN", True), ("TOK/S", True))


def _provider_table(rows, scene):
    cells = []
    for raw in rows:
        row = _aged(raw, scene.age)
        today = _today_of(scene.today, row.get("name", ""))
        unknown = "?" if isinstance(scene.today, dict) else "-"
        speed = _speed(row)
        cells.append([
            row.get("name", ""), describe_provider_state(row, brief=True), str(row.get("requests", 0)),
            str(row.get("failures", 0)),
            compact(today["input_tokens"]) if today else unknown,
            compact(today["output_tokens"]) if today else unknown,
            f"{speed['ttft_ms']} ms" if speed and speed.get("ttft_ms") is not None else "-",
            f"{speed['tokens_per_second']}" if speed and speed.get("tokens_per_second") is not None else "-",
        ])
    widths = [max([len(heading)] + [len(c[i]) for c in cells]) for i, (heading, _) in enumerate(COLUMNS)]

    def aligned(values):
        return [value.rjust(width) if number else value.ljust(width)
                for value, width, (_, number) in zip(values, widths, COLUMNS)]

    lines = [[("  " + GAP.join(aligned([h for h, _ in COLUMNS])).rstrip(), "heading")]]
    for raw, values in zip(rows, cells):
        selected = scene.interactive and raw.get("name") == scene.selected
        name, state, *rest = aligned(values)
        lines.append([("> " if selected else "  ", "bold"), (name, "reverse" if selected else "bold"),
                      (GAP, None), (state, STATE_STYLES.get(raw.get("state"))),
                      (GAP + GAP.join(rest), None)])
        lines.extend([("      " + detail, "dim")] for detail in _details(_aged(raw, scene.age)))
    return lines


def _details(row):
    """The lines under a provider's row: its keys when several, what cools, why."""
    details = []
    if row.get("keys"):
        details.append("keys: " + describe_keys(row["keys"]))
    if row.get("models_cooling"):
        details.append("models cooling: " + ", ".join(
            f"{m['model']} for {format_duration(m['seconds_left'])}" for m in row["models_cooling"]))
    if row.get("state") == "cooling" and row.get("last_error"):
        details.append(f"after: {row['last_error']}")
    if row.get("state") == "no_key" and row.get("key_problem"):
        details.append(row["key_problem"])
    return details


def _elapsed(row, scene):
    if scene.wall_now is None or row.get("started_at") is None:
        return row.get("elapsed_seconds") or 0.0
    return max(0.0, scene.wall_now - row["started_at"])


def _in_flight(state, scene):
    rows = sorted(state.in_flight.values(), key=lambda r: r["id"])
    lines = [[], [(f"IN FLIGHT ({len(rows)})", "heading")]]
    if not rows:
        lines.append([("  none", "dim")])
    for row in rows:
        tokens = _tokens(row)
        parts = [f"#{row['id']}", row.get("provider") or "-", row.get("model") or "-",
                 seconds(_elapsed(row, scene)), "answering" if row.get("answering") else "waiting",
                 size(row.get("bytes_out") or 0)] + ([tokens] if tokens else [])
        line = [("  " + GAP.join(parts), None)]
        earlier = list(row.get("tried") or ())
        if row.get("answering") and earlier:
            earlier = earlier[:-1]  # the last is the answer coming in now
        if earlier:
            line.append((f"{GAP}after {', '.join(earlier)}", "yellow"))
        lines.append(line)
    return lines


def _tokens(row):
    if row.get("input_tokens") is None and row.get("output_tokens") is None:
        return ""
    return f"in {compact(row.get('input_tokens'))} out {compact(row.get('output_tokens'))}"


def outcome(row):
    """How an ended request went, in a word or two, and its style."""
    result, status = row.get("outcome"), row.get("status")
    if result == "answered" and row.get("failure"):
        return f"cut ({row['failure']})", "red"
    if result == "answered":
        return f"answered {status}", "green" if status and 200 <= status < 300 else "yellow"
    if result == "client cancelled":
        return "cancelled", "grey"
    return f"{result} {status}" if status else (result or "?"), "red"


def _recent(state, scene):
    rows = list(state.recent)[::-1]
    if not scene.interactive:
        rows = rows[:ONCE_RECENT]
    lines = [[], [("RECENT", "heading")]]
    if not rows:
        lines.append([("  none yet", "dim")])
    for row in rows:
        word, style = outcome(row)
        when = time.strftime("%H:%M:%S", time.localtime(row["started_at"])) if row.get("started_at") else "--:--:--"
        tried = list(row.get("tried") or ())
        if row.get("outcome") == "answered" and tried:
            tried = tried[:-1]  # the last is the provider that answered
        tokens = _tokens(row)
        line = [(f"  {when}{GAP}#{row['id']}{GAP}{row.get('provider') or '-'}{GAP}{row.get('model') or '-'}{GAP}",
                 None), (word, style), (GAP + seconds(row.get("duration_seconds")), None)]
        if tokens:
            line.append((GAP + tokens, None))
        if tried:
            line.append((f"{GAP}{'after' if row.get('outcome') == 'answered' else 'tried'} {', '.join(tried)}",
                         "yellow"))
        lines.append(line)
    return lines


def _footer(scene):
    if not scene.interactive:
        return []
    return [[(scene.message or "", "bold")], [(KEYS_HELP, "reverse")]]
