"""``proxy.py top``: the running proxy, live, in the terminal (as htop shows processes).

The full-screen view follows the daemon's live feed (:mod:`feed_reader`)
and redraws every second and whenever a request starts or ends; the layout
is :mod:`top_layout`'s, the terminal handling :mod:`terminal`'s.  The keys
act on the running proxy through the same code as ``proxy.py disable``,
``enable`` and ``uncool`` (:func:`control.control`), and say what they did
on the line above the keys.  When the daemon goes away the view says so and
keeps looking for it, and follows it again when it is back.

``--once``, or output that is not a terminal (a pipe, a file, ``TERM=dumb``),
prints one snapshot as plain text and exits like ``proxy.py status``:
0 running, 3 not running, 1 running but not answering.
"""

import os
import sys
import time

from .control import control
from .daemon import load_target, probe
from .errors import EXIT_FAILURE, EXIT_NOT_RUNNING, EXIT_OK, UsageError
from .feed_reader import FeedReader, LiveState
from .status import proxy_url_of, this_session, usage_today
from .terminal import (DOWN, INTERRUPT, RESIZE, UP, TerminalUnavailable, can_draw, colour_allowed,
                       escapes_shown, frame, open_terminal)
from .top_layout import Scene, layout, paint

REDRAW_EVERY = 1.0    # seconds between redraws when nothing happens (countdowns, elapsed times)
KEY_WAIT = 0.1        # the longest an event waits to be drawn
TODAY_EVERY = 5.0     # seconds between readings of today's figures from usage.db
TODAY_AFTER_END = 1.0  # ... or this soon after a request ended
MESSAGE_SECONDS = 10.0  # how long what a key did stays on the screen


def cmd_top(args):
    target = load_target(args, lenient=True)
    if args.once or not can_draw(sys.stdout):
        return once(target)
    try:
        return LiveView(target, os.environ, open_terminal()).run()
    except TerminalUnavailable as exc:
        print(f"claude-proxy: {exc}; here is a snapshot instead", file=sys.stderr)
        return once(target)


def once(target, environ=None, out=None):
    """Print one snapshot; the exit code says whether the proxy is running (as ``status``)."""
    out = sys.stdout if out is None else out
    environ = os.environ if environ is None else environ
    current = probe(target.paths, target.config)
    state = LiveState()
    if current.running:
        state.apply("connected", current.record)
        state.apply("status", current.status)
    else:
        state.apply("down", current)
    scene = _scene(target, environ, current, usage_today(target) if current.running else None)
    with escapes_shown(out, environ) as colour:
        for line in layout(state, scene).fit():
            print(paint(line, colour), file=out)
    if current.running:
        return EXIT_OK
    return EXIT_FAILURE if current.silent else EXIT_NOT_RUNNING


def _scene(target, environ, current, today):
    session = this_session(environ, current, target) if current is not None else {"mode": "normal"}
    return Scene(target=target, session=session, url=proxy_url_of(current, target) if current is not None else None,
                 today=today, token_ok=session.get("token_ok"))


class LiveView:
    """The full-screen view: the loop of events, keys and redraws; see the module docstring."""

    def __init__(self, target, environ, terminal, reader=None, clock=time.monotonic, wall=time.time):
        self.target = target
        self.environ = environ
        self.terminal = terminal
        self.reader = reader if reader is not None else FeedReader(target.paths, target.config)
        self.clock, self.wall = clock, wall
        self.state = LiveState()
        self.colour = colour_allowed(environ)
        self.selected = None   # the provider's name: it stays selected when the list changes
        self.message = None
        self.message_until = 0.0
        self.today = None
        self.today_at = None
        self._last_frame = None
        self._last_size = None

    def run(self):
        """Show the view until ``q`` (or Ctrl+C, which ends in KeyboardInterrupt); returns 0."""
        with self.terminal:
            self.reader.start()
            try:
                return self._loop()
            finally:
                self.reader.stop()

    def _loop(self):
        next_draw = 0.0
        while True:
            now = self.clock()
            changed = False
            for name, payload in self.reader.events():
                self.state.apply(name, payload, now)
                changed = True
            changed |= self._read_today(now)
            if changed or now >= next_draw:
                self.draw()
                next_draw = now + REDRAW_EVERY
            for key in self.terminal.keys(max(0.0, min(KEY_WAIT, next_draw - self.clock()))):
                if not self.handle(key):
                    return EXIT_OK
                next_draw = 0.0

    def _read_today(self, now):
        """Read today's figures from usage.db when due; True if they were read."""
        if self.state.status is None:
            return False
        due = self.today_at is None or now - self.today_at >= TODAY_EVERY or (
            self.state.ended_since_today and now - self.today_at >= TODAY_AFTER_END)
        if not due:
            return False
        self.today, self.today_at = usage_today(self.target), now
        self.state.ended_since_today = False
        return True

    # --- keys ------------------------------------------------------------------------------

    def handle(self, key):
        """Act on one key; False to quit."""
        if key in ("q", "Q", INTERRUPT):
            return False
        if key in (UP, "k", DOWN, "j"):
            self._move(-1 if key in (UP, "k") else 1)
        elif key == "d":
            self._toggle_disabled()
        elif key == "c":
            self._act("uncool", self._selected_row())
        elif key == RESIZE:
            self._last_frame = None
        return True

    def _names(self):
        return [row.get("name") for row in (self.state.status or {}).get("providers") or ()]

    def _selected_row(self):
        rows = (self.state.status or {}).get("providers") or ()
        return next((row for row in rows if row.get("name") == self._selection()), None)

    def _selection(self):
        names = self._names()
        if self.selected not in names:
            self.selected = names[0] if names else None
        return self.selected

    def _move(self, step):
        names = self._names()
        if names:
            index = names.index(self._selection())
            self.selected = names[max(0, min(len(names) - 1, index + step))]

    def _toggle_disabled(self):
        row = self._selected_row()
        if row is not None and row.get("state") == "disabled" and not row.get("disabled_by_command"):
            self._say(f"{row['name']} is disabled in the config (\"enabled\": false); "
                      "change it there and restart the proxy to use it")
            return
        self._act("enable" if row is not None and row.get("disabled_by_command") else "disable", row)

    def _act(self, action, row):
        """``action`` on the provider of ``row``, as ``proxy.py ACTION NAME`` does it."""
        if row is None:
            self._say("the proxy is not running: nothing to act on")
            return
        try:
            self._say(control(self.target, action, row["name"]))
        except UsageError as exc:  # not running any more, refused: the reason, as the command says it
            self._say(str(exc))

    def _say(self, message):
        self.message, self.message_until = message, self.clock() + MESSAGE_SECONDS

    # --- drawing ---------------------------------------------------------------------------

    def draw(self):
        """Draw the frame for now, if it differs from the last one drawn (or the window changed)."""
        columns, rows = self.terminal.size()
        if (columns, rows) != self._last_size:
            self._last_size, self._last_frame = (columns, rows), None
        now = self.clock()
        current = self.state.probe(self.target.config)
        scene = _scene(self.target, self.environ, current, self.today if self.state.status else None)
        scene.age = self.state.age(now)
        scene.wall_now = self.wall()
        scene.selected = self._selection()
        scene.message = self.message if now < self.message_until else None
        scene.interactive = True
        lines = layout(self.state, scene).fit(rows)
        # The last row stops short of the last column, where a terminal may scroll.
        painted = [paint(line, self.colour, columns - (number == rows - 1))
                   for number, line in enumerate(lines)]
        text = frame(painted, columns, rows)
        if text != self._last_frame:
            self.terminal.write(text)
            self._last_frame = text
