"""``proxy.py top --once`` (and top with output that is not a terminal), the layout
both forms share, and the feed reader the full-screen view follows.

The full-screen view itself, in a real pseudo-terminal, is in test_top_terminal.py.
"""

import re
import threading
import time

import pytest

from daemon_support import fake, url_of, wait_until, workspace  # noqa: F401  (fixtures)
from fakes import Reply, Stream, error_json, request

from claude_proxy import errors, top_layout
from claude_proxy.daemon import Probe
from claude_proxy.feed_reader import FeedReader, LiveState
from claude_proxy.state import StatePaths
from claude_proxy.top_layout import Layout, Scene, layout, paint

ESCAPE = "\x1b"


def lines_of(text):
    return text.splitlines()


def row_of(output, name):
    """The provider table's row of ``name``."""
    return next(line for line in output.splitlines() if re.match(rf"^[ >] {name} ", line))


def send(url, token, body=None):
    return request(url, headers={"x-api-key": token, "content-type": "application/json"},
                   body=body or {"model": "claude-x", "max_tokens": 5, "messages": []})


# --- top --once against a real daemon ------------------------------------------------------------


def test_once_shows_each_provider_state(workspace, fake):
    good = fake()
    config = workspace.config([("ready1", good.url), ("cooled", good.url), ("switched", good.url),
                               ("keyless", good.url)])
    workspace.keys(KEY_READY1="secret-ready-1", KEY_COOLED="secret-cooled-2", KEY_SWITCHED="secret-off-3")
    assert workspace.run("start", config=config).returncode == 0
    assert workspace.run("cool", "cooled", "--for", "10m", config=config).returncode == 0
    assert workspace.run("disable", "switched", config=config).returncode == 0
    assert send(url_of(workspace.record(config)), workspace.token(config))[0] == 200

    shown = workspace.run("top", "--once", config=config)
    assert shown.returncode == errors.EXIT_OK, shown.stderr
    out = shown.stdout
    pid = workspace.record(config)["pid"]
    assert re.match(rf"claude-proxy \S+ on {re.escape(url_of(workspace.record(config)))} \(pid {pid}\), "
                    r"up \d+s, strategy fallback\n", out)
    assert "  this session: not through the proxy (ANTHROPIC_BASE_URL is not set)" in lines_of(out)
    assert re.match(r"  PROVIDER +STATE +REQS +FAIL +IN TODAY +OUT TODAY +1ST TOKEN +TOK/S$", lines_of(out)[3])
    assert re.match(r"  ready1 +ready +1 +0 +12 +7 +\d+ ms +\d+\.\d$", row_of(out, "ready1")), out  # the fake's usage
    assert re.search(r"  cooling for (9m 5\ds|10m 00s) +0 +0 ", row_of(out, "cooled"))
    assert re.search(r"  disabled until enabled +0 +0 ", row_of(out, "switched"))
    assert re.search(r"  no key \(KEY_KEYLESS\) +0 +0 ", row_of(out, "keyless"))
    assert re.search(r"\d\d:\d\d:\d\d  #1  ready1  claude-x  answered 200  \d+\.\ds  in 12 out 7$", out, re.M)
    assert ESCAPE not in out  # not a terminal: plain text
    for secret in ("secret-ready-1", "secret-cooled-2", "secret-off-3", workspace.token(config)):
        assert secret not in out


def test_output_that_is_not_a_terminal_gets_the_snapshot_without_asking(workspace, fake):
    config = workspace.config([("p1", fake().url)])
    workspace.keys(KEY_P1="secret-p1")
    assert workspace.run("start", config=config).returncode == 0
    plain = workspace.run("top", config=config, timeout=20)  # stdout is a pipe: no full screen, no waiting
    assert plain.returncode == 0 and ESCAPE not in plain.stdout
    assert re.search(r"^  p1 +ready ", plain.stdout, re.M)
    assert "q quit" not in plain.stdout and "> p1" not in plain.stdout  # no keys, no selection


def test_once_shows_a_stream_in_flight_and_then_how_it_ended(workspace, fake):
    first, second = fake(Reply(529, error_json(529, "overloaded_error", "busy"))), fake(Stream(hold_after=3))
    config = workspace.config([("p1", first.url), ("p2", second.url)])
    workspace.keys(KEY_P1="secret-p1", KEY_P2="secret-p2")
    assert workspace.run("start", config=config).returncode == 0
    answer = {}
    worker = threading.Thread(target=lambda: answer.update(r=send(
        url_of(workspace.record(config)), workspace.token(config),
        {"model": "claude-x", "stream": True, "max_tokens": 5, "messages": []})))
    worker.start()
    try:
        assert wait_until(lambda: second.frames_sent == 3)
        during = workspace.run("top", "--once", config=config).stdout
    finally:
        second.release()
        worker.join(20)
    assert answer["r"][0] == 200
    assert "IN FLIGHT (1)" in during
    assert re.search(r"^  #1  p2  claude-x  \d+\.\ds  answering  \d+(\.\d)? (B|KB)  in 25 out 1  after p1=529$",
                     during, re.M), during
    assert re.search(r"^  p1 +cooling for \d+m \d\ds ", during, re.M)
    assert "after: 529 overloaded_error" in during

    after = workspace.run("top", "--once", config=config).stdout
    assert "IN FLIGHT (0)\n  none" in after
    assert re.search(r"#1  p2  claude-x  answered 200  \d+\.\ds  in 25 out 9  after p1=529$", after, re.M), after


def test_once_when_not_running_says_so_with_status_exit_code(workspace, fake):
    config = workspace.config([("p1", fake().url)])
    shown = workspace.run("top", "--once", config=config)
    assert shown.returncode == errors.EXIT_NOT_RUNNING == 3
    assert shown.stdout.splitlines()[0] == f"claude-proxy is not running (config: {config})"
    assert shown.stdout == workspace.run("status", config=config).stdout  # the same words as status
    assert ESCAPE not in shown.stdout


# --- colour: on a terminal only, never with NO_COLOR ------------------------------------------


class TerminalOutput:
    """A stream that says it is a terminal, and keeps what it was sent."""

    def __init__(self):
        self.parts = []

    def isatty(self):
        return True

    def write(self, text):
        self.parts.append(text)

    def flush(self):
        pass

    def text(self):
        return "".join(self.parts)


def snapshot_state():
    state = LiveState()
    state.apply("connected", {"pid": 1, "port": 8787, "host": "127.0.0.1"})
    state.apply("status", {"version": "9.9", "pid": 1, "uptime_seconds": 5, "strategy": "fallback",
                           "providers": [provider("alpha"), provider("beta", state="cooling",
                                                                       cooldown_seconds_left=30.0)]})
    return state


def provider(name, state="ready", **extra):
    return {"name": name, "state": state, "requests": 0, "failures": 0, "key_env": f"KEY_{name.upper()}",
            "cooldown_seconds_left": 0.0, **extra}


def scene(**extra):
    return Scene(target=None, session={"mode": "fallback", "provider": None, "base_url": "x"},
                 url="http://127.0.0.1:8787", **extra)


@pytest.mark.parametrize("environ, coloured", [({"TERM": "xterm"}, True), ({"TERM": "xterm", "NO_COLOR": "1"}, False),
                                               ({"TERM": "dumb"}, False)])
def test_a_snapshot_on_a_terminal_is_coloured_unless_asked_not_to(monkeypatch, environ, coloured):
    from claude_proxy import top

    state = snapshot_state()
    monkeypatch.setattr(top, "probe", lambda paths, config: Probe(state.record, state.status))
    monkeypatch.setattr(top, "usage_today", lambda target: [])
    target = type("Target", (), {"paths": StatePaths("/nonexistent"), "config": None})()
    out = TerminalOutput()
    assert top.once(target, environ, out) == 0
    assert ("\x1b[32mready" in out.text()) is coloured  # ready in green
    assert (ESCAPE in out.text()) is coloured


# --- the layout ---------------------------------------------------------------------------


def test_paint_cuts_by_what_shows_and_colours_each_segment():
    segments = [("abc", "green"), ("def", None)]
    assert paint(segments, colour=False) == "abcdef"
    assert paint(segments, colour=True) == "\x1b[32mabc\x1b[0mdef"
    assert paint(segments, colour=True, width=4) == "\x1b[32mabc\x1b[0md"


def test_countdowns_go_on_between_snapshots():
    text = "\n".join(paint(line, False) for line in layout(snapshot_state(), scene(age=12.4)).fit())
    assert re.search(r"^  beta +cooling for 18s ", text, re.M)


def test_the_full_screen_fits_the_window_keeping_the_providers_and_the_keys():
    state = snapshot_state()
    for number in range(1, 40):
        state.apply("end", {"id": number, "provider": "alpha", "model": "m", "outcome": "answered", "status": 200,
                            "tried": ["alpha=200"], "started_at": 0, "duration_seconds": 1.0})
    lines = layout(state, scene(interactive=True, selected="beta", message="done")).fit(16)
    text = [paint(line, False) for line in lines]
    assert len(text) == 16
    assert text[-1] == top_layout.KEYS_HELP and text[-2] == "done"
    assert any(line.startswith("> beta ") for line in text)  # the selection
    assert "RECENT" in text and "#39" in "\n".join(text)  # the newest first, as many as fit
    assert "#1 " not in "\n".join(text)


@pytest.mark.parametrize("height", [1, 2, 3, 9])
def test_a_tiny_window_still_gets_the_keys_line(height):
    lines = layout(snapshot_state(), scene(interactive=True)).fit(height)
    assert len(lines) == height and paint(lines[-1], False) == top_layout.KEYS_HELP


def test_requests_in_flight_come_before_the_last_ones_which_keep_a_row():
    state = snapshot_state()
    for number in range(1, 30):
        state.apply("start", {"id": number, "provider": "alpha", "model": "m", "elapsed_seconds": 1.0})
        state.apply("end", {"id": 100 + number, "provider": "alpha", "model": "m", "outcome": "answered",
                            "status": 200, "started_at": 0, "duration_seconds": 1.0})
    text = [paint(line, False) for line in layout(state, scene(interactive=True)).fit(24)]
    assert len(text) == 24
    assert text[-5:-2] == ["", "RECENT", text[-3]] and "#129" in text[-3]
    # 24 rows: the keys and the message, 6 of header and providers, 2 headings of requests in
    # flight and 3 rows of the last ones leave 11 for requests in flight.
    assert "IN FLIGHT (29)" in text and sum(row.startswith("  #") for row in text) == 11


@pytest.mark.parametrize("row, words", [
    ({"outcome": "answered", "status": 200}, ("answered 200", "green")),
    ({"outcome": "answered", "status": 200, "failure": "provider cut the stream"},
     ("cut (provider cut the stream)", "red")),
    ({"outcome": "answered", "status": 400}, ("answered 400", "yellow")),
    ({"outcome": "client cancelled", "status": None}, ("cancelled", "grey")),
    ({"outcome": "all failed", "status": 529}, ("all failed 529", "red")),
])
def test_how_a_request_ended_is_worded(row, words):
    assert top_layout.outcome(row) == words


def test_a_request_that_failed_everywhere_says_where_it_was_tried():
    state = snapshot_state()
    state.apply("end", {"id": 7, "provider": None, "model": "m", "outcome": "all failed", "status": 529,
                        "tried": ["alpha=529", "beta=529"], "started_at": 0, "duration_seconds": 0.5})
    text = "\n".join(paint(line, False) for line in layout(state, scene()).fit())
    assert re.search(r"#7  -  m  all failed 529  0\.5s  tried alpha=529, beta=529$", text, re.M)


def test_a_key_pool_shows_each_key_masked():
    state = snapshot_state()
    state.status["providers"][0]["keys"] = [
        {"key": "****abcd", "state": "ready", "cooldown_seconds_left": 0, "requests": 3},
        {"key": "****wxyz", "state": "cooling", "cooldown_seconds_left": 40, "requests": 1}]
    text = "\n".join(paint(line, False) for line in layout(state, scene()).fit())
    assert "      keys: ****abcd ready (3 requests), ****wxyz cooling for 40s (1 request)" in text


def test_speed_and_todays_tokens_come_from_status_and_the_usage_record():
    state = snapshot_state()
    state.status["providers"][0]["speed"] = {
        "m1": {"ttft_ms": 820, "tokens_per_second": 45.2, "samples": 3},
        "m2": {"ttft_ms": 100, "tokens_per_second": 9.0, "samples": 1}}
    today = [{"provider": "alpha", "input_tokens": 34512, "output_tokens": 2100}]
    text = "\n".join(paint(line, False) for line in layout(state, scene(today=today)).fit())
    assert re.search(r"^  alpha +ready +0 +0 +34\.5k +2100 +820 ms +45\.2$", text, re.M), text
    unreadable = "\n".join(paint(line, False) for line in layout(state, scene(today={"error": "locked"})).fit())
    assert re.search(r"^  alpha +ready +0 +0 +\? +\? ", unreadable, re.M)
    assert "today: locked" in unreadable


def test_missed_events_are_counted_in_the_header():
    state = snapshot_state()
    state.status["dropped"] = 12
    text = "\n".join(paint(line, False) for line in layout(state, scene()).fit())
    assert "12 events missed (this view fell behind)" in text


def test_a_failed_reload_and_a_setting_that_needs_a_restart_show_in_the_header():
    state = snapshot_state()
    state.status["config_error"] = {"since": time.mktime((2026, 12, 2, 14, 5, 0, 0, 0, -1)),
                                    "message": "config.json: invalid JSON at line 3, column 1"}
    state.status["restart_needed"] = ["proxy_port changed: restart to apply"]
    text = "\n".join(paint(line, False) for line in layout(state, scene()).fit())
    assert "config error since 14:05: config.json: invalid JSON at line 3, column 1" in text
    assert "proxy_port changed: restart to apply" in text


# --- the live state -------------------------------------------------------------------------


def test_live_state_follows_requests_between_snapshots():
    state = snapshot_state()
    state.apply("start", {"id": 5, "provider": "alpha"})
    assert list(state.in_flight) == [5]
    state.apply("end", {"id": 5, "outcome": "answered"})
    assert state.in_flight == {} and state.recent[-1]["id"] == 5 and state.ended_since_today
    state.apply("end", {"id": 5, "outcome": "answered"})  # told twice (a snapshot and an event)
    assert [row["id"] for row in state.recent] == [5]
    state.apply("down", Probe(None, None))
    assert state.status is None and state.in_flight == {} and not state.recent


def test_a_layout_with_nothing_known_yet_says_it_is_looking():
    lines = Layout.fit(layout(LiveState(), scene(interactive=True)), 5)
    assert paint(lines[0], False) == "claude-proxy: looking for the proxy..."


# --- the feed reader --------------------------------------------------------------------------


def test_the_feed_reader_follows_the_daemon_away_and_back(workspace, fake):
    config = workspace.config([("p1", fake().url)])
    workspace.keys(KEY_P1="secret-p1")
    assert workspace.run("start", config=config).returncode == 0
    reader = FeedReader(StatePaths(config.parent), retry=0.2).start()
    seen = []

    def next_event(name, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in reader.events(0.1):
                seen.append(event)
                if event[0] == name:
                    return event[1]
        raise AssertionError(f"no {name} event; saw {[n for n, _ in seen]}")

    try:
        first_pid = workspace.record(config)["pid"]
        assert next_event("connected")["pid"] == first_pid
        assert next_event("status")["pid"] == first_pid
        assert workspace.run("stop", config=config).returncode == 0
        down = next_event("down")
        assert not down.running and not down.silent
        assert workspace.run("start", config=config).returncode == 0
        second_pid = workspace.record(config)["pid"]
        assert next_event("status")["pid"] == second_pid != first_pid
    finally:
        reader.stop()
    assert not reader._thread.is_alive()


# --- the full-screen loop, with a scripted terminal and feed ------------------------------------


class ScriptedTerminal:
    """A terminal whose keys come in the batches given (then ``q``); it keeps what was drawn."""

    def __init__(self, *batches, size=(100, 20)):
        self.batches = list(batches)
        self.drawn = []
        self.dimensions = size

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False

    def size(self):
        return self.dimensions

    def write(self, text):
        self.drawn.append(text)

    def keys(self, timeout):
        return self.batches.pop(0) if self.batches else ["q"]

    def screen(self):
        """The rows of the last frame, escapes left out."""
        rows = re.split(r"\x1b\[\d+;1H", self.drawn[-1])[1:]
        return [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", row) for row in rows]


class ScriptedFeed:
    def __init__(self, *events):
        self.pending = list(events)
        self.stopped = False

    def start(self):
        return self

    def stop(self):
        self.stopped = True

    def events(self, timeout=0.0):
        found, self.pending = self.pending, []
        return found


def live_view(tmp_path, terminal, providers, monkeypatch, acted):
    from claude_proxy import top
    from claude_proxy.daemon import Target

    monkeypatch.setattr(top, "control", lambda target, action, name: acted.append((action, name)) or
                        f"did {action} {name}")
    feed = ScriptedFeed(("connected", {"pid": 1, "port": 8787, "host": "127.0.0.1"}),
                        ("status", {"version": "9.9", "pid": 1, "uptime_seconds": 5, "providers": providers}))
    target = Target(tmp_path / "config.json", False, None, StatePaths(tmp_path))
    return top.LiveView(target, {"TERM": "xterm", "NO_COLOR": "1"}, terminal, reader=feed), feed


def test_d_on_a_provider_disabled_in_the_config_says_so_and_asks_nothing(tmp_path, monkeypatch):
    acted = []
    terminal = ScriptedTerminal(["j"], ["d"], [])
    view, feed = live_view(tmp_path, terminal, [provider("alpha"), provider("beta", state="disabled")],
                           monkeypatch, acted)
    assert view.run() == errors.EXIT_OK
    assert acted == [] and feed.stopped
    rows = terminal.screen()
    assert any(row.startswith("> beta ") for row in rows)
    assert rows[-2].startswith('beta is disabled in the config ("enabled": false)')


def test_d_and_c_act_on_the_selected_provider(tmp_path, monkeypatch):
    acted = []
    switched = provider("beta", state="disabled", disabled_by_command={"at": 0, "seconds_left": None})
    terminal = ScriptedTerminal(["d"], ["j", "d"], ["c"], [])
    view, _ = live_view(tmp_path, terminal, [provider("alpha"), switched], monkeypatch, acted)
    assert view.run() == errors.EXIT_OK
    assert acted == [("disable", "alpha"), ("enable", "beta"), ("uncool", "beta")]
    assert terminal.screen()[-2] == "did uncool beta"  # what the last key did, above the keys
