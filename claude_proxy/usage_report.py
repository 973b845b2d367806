"""``proxy.py usage``: what was used where, read from ``usage.db``.

Works whether or not the daemon runs (it only reads, with a read-only
connection, so it never stands in the writer's way).  Days are the user's
local days: ``--since``/``--until`` name local dates, and a request belongs
to the local day it began on.

What a group's figures mean (the README says the same):

- ``requests``: in a group with a provider, the requests that provider
  answered; in a group without one (by day or model, the totals, and the
  provider-less row of requests no provider answered), all its requests;
- ``failovers``: the times a provider failed and the request was passed on
  to another (with a provider: that provider's);
- ``failures``: requests that failed in the end (all failed, cut mid-answer,
  no usable provider, ended by a shutdown);
- tokens: what the answering provider reported; ``cost_usd`` from the
  config's ``prices`` for the provider and the model it was sent, None when a
  group has tokens no price covers;
- ``median_ttfb_ms``: the median time to the first byte of the answers.
"""

import csv
import dataclasses
import datetime
import json
import re
import shutil
import sqlite3
import statistics
import sys
import textwrap

from .config import price_of
from .errors import UsageError
from .usage import FAILURES, connect_for_reading

GROUPINGS = ("day", "provider", "model", "provider,model", "day,provider", "day,model", "day,provider,model")
TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
PRICE_FIELDS = ("input", "output", "cache_read", "cache_write")  # the same order as TOKEN_FIELDS
METRICS = ("requests", "failovers", "failures", *TOKEN_FIELDS, "cost_usd", "median_ttfb_ms")
DEFAULT_SINCE = "30d"
DEFAULT_BY = "provider"
SINCE_HELP = "today, yesterday, Nd (the last N days, today included) or YYYY-MM-DD; local time"


def cmd_usage(args):
    from .daemon import load_target

    target = load_target(args, lenient=True)
    prices = target.config.prices if target.config is not None else {}
    order = target.config.provider_names if target.config is not None else []
    if args.json or args.csv:
        fmt = "json" if args.json else "csv"
    else:
        fmt = "table"
    return usage(target.paths.usage, prices, since=args.since, until=args.until, by=args.by, fmt=fmt,
                 provider_order=order)


def usage(path, prices, since=DEFAULT_SINCE, until=None, by=DEFAULT_BY, fmt="table", now=None,
          provider_order=(), out=None, width=None):
    out = out or sys.stdout
    keys = tuple(by.split(","))
    start, end = time_range(since, until, now)
    groups, total = report(path, prices, keys, start, end, provider_order)
    if fmt == "json":
        print(json.dumps([g.as_dict(keys) for g in groups], indent=2), file=out)
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([*keys, *METRICS])
        for group in groups:
            row = group.as_dict(keys)
            writer.writerow(["" if row[k] is None else row[k] for k in (*keys, *METRICS)])
    else:
        width = width or shutil.get_terminal_size().columns
        print(format_table(groups, total, keys, describe_range(since, until, now), bool(prices), width), file=out)
    return 0


# --- time ---------------------------------------------------------------------------


def day_named(value, option, today):
    """The local date ``value`` names: today, yesterday, ``Nd`` or ``YYYY-MM-DD``."""
    text = (value or "").strip().lower()
    if text == "today":
        return today
    if text == "yesterday":
        return today - datetime.timedelta(days=1)
    days = re.fullmatch(r"(\d{1,5})d", text)
    if days and int(days.group(1)) >= 1:
        return today - datetime.timedelta(days=int(days.group(1)) - 1)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        try:
            return datetime.date.fromisoformat(text)
        except ValueError:
            pass
    raise UsageError(f"{option} {value!r}: use {SINCE_HELP}")


def time_range(since, until, now=None):
    """``(start, end)`` in epoch seconds: from the start of ``since``'s local day to the
    end of ``until``'s (None: no end)."""
    today = datetime.date.fromtimestamp(now) if now is not None else datetime.date.today()
    first = day_named(since, "--since", today)
    start = _local_midnight(first)
    if until is None:
        return start, None
    last = day_named(until, "--until", today)
    if last < first:
        raise UsageError(f"--until {until} is before --since {since}")
    return start, _local_midnight(last + datetime.timedelta(days=1))


def describe_range(since, until, now=None):
    today = datetime.date.fromtimestamp(now) if now is not None else datetime.date.today()
    first = day_named(since, "--since", today)
    last = day_named(until, "--until", today) if until is not None else None
    if last is None:
        return f"since {first.isoformat()}" if first != today else "today"
    if first == last:
        return f"on {first.isoformat()}"
    return f"{first.isoformat()} to {last.isoformat()}"


def _local_midnight(day):
    return datetime.datetime.combine(day, datetime.time()).timestamp()  # naive: local time


# --- the figures ------------------------------------------------------------------------


@dataclasses.dataclass
class Group:
    key: tuple
    requests: int = 0
    failovers: int = 0
    failures: int = 0
    tokens: list = dataclasses.field(default_factory=lambda: [0, 0, 0, 0])
    cost: float = 0.0
    cost_known: bool = True
    ttfbs: list = dataclasses.field(default_factory=list)

    @property
    def cost_usd(self):
        return round(self.cost, 6) if self.cost_known else None

    @property
    def median_ttfb_ms(self):
        return round(statistics.median(self.ttfbs), 1) if self.ttfbs else None

    def as_dict(self, keys):
        row = dict(zip(keys, self.key))
        row.update(requests=self.requests, failovers=self.failovers, failures=self.failures)
        row.update(zip(TOKEN_FIELDS, self.tokens))
        row.update(cost_usd=self.cost_usd, median_ttfb_ms=self.median_ttfb_ms)
        return row

    def add_cost(self, prices, provider, model, tokens):
        if not any(tokens):
            return
        price = price_of(prices, provider, model)
        figures = [getattr(price, f) if price else None for f in PRICE_FIELDS]
        if any(count and figure is None for count, figure in zip(tokens, figures)):
            self.cost_known = False
            return
        self.cost += sum(count * (figure or 0) for count, figure in zip(tokens, figures)) / 1_000_000


_DAY = "date(time, 'unixepoch', 'localtime')"
_FAILED = f"outcome IN ({', '.join('?' * len(FAILURES))})"


def report(path, prices, keys, start, end, provider_order=()):
    """``(groups, total)`` for the requests from ``start`` to ``end`` (epoch seconds; None: no end),
    grouped by ``keys`` (of "day", "provider", "model")."""
    for key in keys:
        if key not in ("day", "provider", "model"):
            raise UsageError(f"--by {','.join(keys)}: choose from {', '.join(GROUPINGS)}")
    if not path.exists():
        return [], Group(())
    end = float("inf") if end is None else end
    window = "time >= ? AND time < ?"
    try:
        conn = connect_for_reading(path)
    except sqlite3.Error as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    try:
        fine = conn.execute(
            f"SELECT {_DAY}, provider, model, model_sent, count(*), sum({_FAILED}), sum(failovers), "
            f"sum(input_tokens), sum(output_tokens), sum(cache_read_input_tokens), "
            f"sum(cache_creation_input_tokens) FROM requests WHERE {window} GROUP BY 1, 2, 3, 4",
            (*FAILURES, start, end)).fetchall()
        passed_on = conn.execute(
            "SELECT date(r.time, 'unixepoch', 'localtime'), a.provider, r.model, count(*) FROM attempts a "
            "JOIN requests r ON r.id = a.request_id WHERE a.passed_on = 1 AND r.time >= ? AND r.time < ? "
            "GROUP BY 1, 2, 3", (start, end)).fetchall()
        ttfbs = conn.execute(f"SELECT {_DAY}, provider, model, ttfb_ms FROM requests WHERE {window} "
                             f"AND ttfb_ms IS NOT NULL", (start, end)).fetchall()
    except sqlite3.Error as exc:
        raise UsageError(f"cannot read {path}: {exc} (is it a claude-proxy usage.db?)") from None
    finally:
        conn.close()

    def key_of(day, provider, model):
        values = {"day": day, "provider": provider, "model": model}
        return tuple(values[k] for k in keys)

    groups, total = {}, Group(())

    def group(key):
        if key not in groups:
            groups[key] = Group(key)
        return groups[key]

    for day, provider, model, model_sent, count, failures, failovers, *tokens in fine:
        for g in (group(key_of(day, provider, model)), total):
            g.requests += count
            g.failures += failures
            g.tokens = [a + b for a, b in zip(g.tokens, tokens)]
            g.add_cost(prices, provider, model_sent, tokens)
        if "provider" not in keys:  # else each provider's own, from the attempts (below)
            group(key_of(day, provider, model)).failovers += failovers
    for day, provider, model, count in passed_on:
        total.failovers += count
        if "provider" in keys:
            group(key_of(day, provider, model)).failovers += count
    for day, provider, model, ttfb in ttfbs:
        group(key_of(day, provider, model)).ttfbs.append(ttfb)
        total.ttfbs.append(ttfb)
    order = {name.lower(): number for number, name in enumerate(provider_order)}

    def sort_key(g):
        values = dict(zip(keys, g.key))
        provider = values.get("provider")
        return (values.get("day") or "", provider is None, order.get((provider or "").lower(), len(order)),
                (provider or "").lower(), (values.get("model") or "").lower())

    return sorted(groups.values(), key=sort_key), total


def today_by_provider(path, prices, provider_order=(), now=None):
    """Today's figures per provider (for ``proxy.py status``): a list of dicts, [] without a record."""
    start, end = time_range("today", "today", now)
    groups, _ = report(path, prices, ("provider",), start, end, provider_order)
    return [g.as_dict(("provider",)) for g in groups]


# --- the table ------------------------------------------------------------------------------

#: Each column's heading, on two lines.
COLUMN_NAMES = {
    "day": ("", "day"), "provider": ("", "provider"), "model": ("", "model"), "requests": ("", "requests"),
    "failovers": ("", "failovers"), "failures": ("", "failures"), "input_tokens": ("tokens", "in"),
    "output_tokens": ("tokens", "out"), "cache_read_input_tokens": ("cache", "read"),
    "cache_creation_input_tokens": ("cache", "write"), "cost_usd": ("", "cost"), "median_ttfb_ms": ("ttfb", "p50"),
}
#: What goes first when the terminal is too narrow for every column.
DROP_ORDER = ("median_ttfb_ms", "cache_creation_input_tokens", "failures", "failovers", "cache_read_input_tokens",
              "output_tokens", "input_tokens", "cost_usd")
GAP = "  "
#: How narrow a key column gets before columns are left out, and at the very least.
KEY_WIDTHS = {"model": (18, 6), "provider": (10, 6)}


def format_table(groups, total, keys, period, priced, width):
    """The report as text no line of which is wider than ``width``."""
    width = max(width, 20)
    title = f"claude-proxy usage {period} (local time), by {', '.join(keys)}"
    if not groups:
        return _wrap(f"{title}: no requests recorded.", width)
    metrics = [m for m in METRICS if priced or m != "cost_usd"]
    rows = [g.as_dict(keys) for g in groups]
    totals = total.as_dict(())
    totals.update({k: "" for k in keys})
    totals[keys[0]] = "total"
    columns = [*keys, *metrics]
    dropped = []
    for compact in (False, True):
        cells = _cells(columns, rows, totals, keys, compact)
        if _fits(cells, columns, width):
            break
    else:
        cells = _shrink_keys(cells, keys, columns, width, 0)
        while not _fits(cells, columns, width):
            candidates = [c for c in DROP_ORDER if c in columns]
            if not candidates:
                cells = _shrink_keys(cells, keys, columns, width, 1)
                break
            columns.remove(candidates[0])
            dropped.append(" ".join(COLUMN_NAMES[candidates[0]]).strip())
            cells = _shrink_keys(_cells(columns, rows, totals, keys, True), keys, columns, width, 0)
    lines = [*_wrap(title, width).splitlines(), ""]
    widths = {c: max(len(line[c]) for line in cells) for c in columns}

    def render(line):
        parts = [line[c].ljust(widths[c]) if c in keys else line[c].rjust(widths[c]) for c in columns]
        return GAP.join(parts).rstrip()[:width]

    top, header, *body, footer = cells
    if any(top[c] for c in columns):
        lines.append(render(top))
    lines.append(render(header))
    lines.extend(render(line) for line in body)
    lines.append(GAP.join("-" * widths[c] for c in columns)[:width])
    lines.append(render(footer))
    notes = []
    if not priced:
        notes.append('no "prices" in the config, so no cost column (see the README)')
    elif total.cost_usd is None:
        notes.append('"?": tokens without a price in the config\'s "prices"')
    if dropped:
        notes.append(f"not shown for the terminal's width: {', '.join(dropped)}; --csv and --json have every column")
    for note in notes:
        lines.append(_wrap(f"({note})", width))
    return "\n".join(lines)


def _cells(columns, rows, totals, keys, compact):
    top = {c: COLUMN_NAMES[c][0] for c in columns}
    header = {c: COLUMN_NAMES[c][1] for c in columns}
    return [top, header, *({c: _cell(c, row.get(c), keys, compact) for c in columns} for row in rows),
            {c: _cell(c, totals.get(c), keys, compact) for c in columns}]


def _cell(column, value, keys, compact):
    if column in keys:
        if value is None:
            return "(none)" if column == "provider" else "?"
        return str(value)
    if column == "cost_usd":
        return "?" if value is None else f"${value:,.2f}" if value >= 0.01 or value == 0 else "<$0.01"
    if column == "median_ttfb_ms":
        if value is None:
            return "-"
        return f"{value / 1000:.1f}s" if compact and value >= 1000 else f"{value:,.0f} ms"
    return _compact(value) if compact else f"{value:,}"


def _compact(number):
    for limit, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if number >= limit:
            return f"{number / limit:.1f}{suffix}"
    return str(number)


def _fits(cells, columns, width):
    total = sum(max(len(line[c]) for line in cells) for c in columns) + len(GAP) * (len(columns) - 1)
    return total <= width


def _shrink_keys(cells, keys, columns, width, level):
    """Cut the widest model or provider names, in the middle with "…" (the end of a model's
    name tells models apart), until the table fits or they are ``KEY_WIDTHS[key][level]`` wide."""
    while not _fits(cells, columns, width):
        widths = {k: max(len(line[k]) for line in cells) for k in KEY_WIDTHS
                  if k in keys and max(len(line[k]) for line in cells) > KEY_WIDTHS[k][level]}
        if not widths:
            break
        widest = max(widths, key=widths.get)
        limit = widths[widest] - 1
        for line in cells:
            text = line[widest]
            if len(text) > limit:
                tail = (limit - 1) // 2
                line[widest] = text[:limit - 1 - tail] + "…" + (text[-tail:] if tail else "")
    return cells


def _wrap(text, width):
    return "\n".join(textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False))
