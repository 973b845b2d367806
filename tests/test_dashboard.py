"""The dashboard over HTTP: who may see it (one-time links, the session cookie,
Host and Origin), what the page and the data endpoint hold, and ``proxy.py dashboard``."""

import argparse
import io
import json
import re
import sqlite3
import time

import pytest

from daemon_support import assert_one_line_error, fake, url_of, workspace  # noqa: F401 -- fixtures
from fakes import Reply, request
from test_feed import EventReader

from claude_proxy import dashboard
from claude_proxy.dashboard_link import cmd_dashboard, graphical_browser_possible
from claude_proxy.dashboard_data import figures
from claude_proxy.usage import INSERT_ATTEMPT, INSERT_REQUEST, MIGRATIONS, REQUEST_COLUMNS


def get_link(running):
    status, _, body = request(running.url, "POST", "/dashboard/link", headers=running.auth())
    assert status == 200, body
    return json.loads(body)["path"]


def ask(running, method, path, **headers):
    """``(status, headers, body)`` of one request with ``headers`` (names with _ for -)."""
    return request(running.url, method, path, headers={k.replace("_", "-"): v for k, v in headers.items()})


def sign_in(running):
    """The ``Cookie`` header value of a new dashboard session."""
    status, headers, _ = ask(running, "GET", get_link(running))
    assert status == 303, headers
    return headers["set-cookie"].split(";")[0]


def own_origin(running):
    return f"http://127.0.0.1:{running.server.port}"


@pytest.fixture
def running(proxy, providers):
    return proxy(providers(Reply()), providers(Reply()))


# --- signing in ---------------------------------------------------------------------------------


def test_the_page_without_a_session_is_a_401_page_that_says_how_to_sign_in(running):
    status, headers, body = ask(running, "GET", "/dashboard")

    assert status == 401
    assert headers["content-type"].startswith("text/html")
    assert b"proxy.py dashboard" in body
    assert headers["cache-control"] == "no-store"


def test_a_one_time_link_sets_the_session_cookie_and_sends_the_browser_to_the_page(running):
    path = get_link(running)
    assert re.fullmatch(r"/dashboard/login\?code=[A-Za-z0-9_-]{40,}", path)

    status, headers, body = ask(running, "GET", path)

    assert status == 303 and headers["location"] == "/dashboard"
    cookie = headers["set-cookie"]
    name, _, rest = cookie.partition("=")
    assert name == f"claude_proxy_{running.server.port}"
    secret, *attributes = [part.strip() for part in rest.split(";")]
    assert len(secret) >= 40
    assert sorted(attributes) == ["HttpOnly", "Path=/", "SameSite=Strict"]  # not Secure: plain http
    assert headers["referrer-policy"] == "no-referrer" and headers["cache-control"] == "no-store"

    status, headers, body = ask(running, "GET", "/dashboard", Cookie=f"{name}={secret}")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert b"<title>claude-proxy dashboard</title>" in body


def test_a_link_checkers_head_does_not_use_a_link_up(running):
    path = get_link(running)
    assert ask(running, "HEAD", path)[0] == 405
    assert ask(running, "GET", path)[0] == 303


def test_a_link_works_once(running):
    path = get_link(running)
    assert ask(running, "GET", path)[0] == 303

    status, headers, body = ask(running, "GET", path)

    assert status == 401 and "set-cookie" not in headers
    assert b"used already" in body and b"proxy.py dashboard" in body


def test_a_link_expires_after_a_minute(running):
    now = [1000.0]
    running.server.dashboard = dashboard.Dashboard(running.server.port, clock=lambda: now[0])
    late, in_time = get_link(running), get_link(running)

    now[0] += dashboard.CODE_SECONDS - 1
    assert ask(running, "GET", in_time)[0] == 303
    now[0] += 2
    assert ask(running, "GET", late)[0] == 401


@pytest.mark.parametrize("code", ["", "nonsense", "a&code=b"])
def test_a_made_up_code_is_refused(running, code):
    get_link(running)
    assert ask(running, "GET", f"/dashboard/login?code={code}")[0] == 401


def test_only_the_token_gets_a_link(running):
    cookie = sign_in(running)
    assert ask(running, "POST", "/dashboard/link")[0] == 401
    assert ask(running, "POST", "/dashboard/link", Cookie=cookie, Origin=own_origin(running))[0] == 401
    assert ask(running, "POST", "/dashboard/link", x_api_key="wrong")[0] == 401


def test_a_cookie_of_another_proxy_or_a_forgotten_session_is_refused(running):
    secret = sign_in(running).partition("=")[2]
    assert ask(running, "GET", "/dashboard", Cookie=f"claude_proxy_1={secret}")[0] == 401
    assert ask(running, "GET", "/dashboard", Cookie=f"claude_proxy_{running.server.port}=x{secret}")[0] == 401
    running.server.dashboard = dashboard.Dashboard(running.server.port)  # what a restart does
    assert ask(running, "GET", "/dashboard", Cookie=f"claude_proxy_{running.server.port}={secret}")[0] == 401


def test_other_cookies_of_the_same_host_do_not_get_in_the_way(running):
    cookie = sign_in(running)
    status, _, _ = ask(running, "GET", "/dashboard", Cookie=f"other=1; broken; {cookie}; theme=\"dark\"")
    assert status == 200


# --- Host, Origin, other pages ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/dashboard", "/dashboard/data", "/events", "LOGIN"])
def test_a_foreign_host_is_a_421_even_with_the_cookie(running, path):
    cookie = sign_in(running)
    login = get_link(running)
    status, _, _ = ask(running, "GET", login if path == "LOGIN" else path, Cookie=cookie,
                       Host=f"attacker.example:{running.server.port}")
    assert status == 421
    assert ask(running, "GET", login)[0] == 303  # the refused link was not used up


@pytest.mark.parametrize("path", ["/dashboard", "/dashboard/data", "/events", "LOGIN"])
def test_a_foreign_origin_is_a_403_even_with_the_cookie(running, path):
    cookie = sign_in(running)
    login = get_link(running)
    status, _, _ = ask(running, "GET", login if path == "LOGIN" else path, Cookie=cookie,
                       Origin="http://attacker.example")
    assert status == 403


@pytest.mark.parametrize("site", ["same-site", "cross-site"])
def test_another_page_of_the_same_site_cannot_use_the_cookie(running, site):
    """A page on another port of 127.0.0.1 is the same *site*: its requests carry the cookie."""
    cookie = sign_in(running)
    for path in ("/dashboard", "/dashboard/data"):
        assert ask(running, "GET", path, Cookie=cookie, Sec_Fetch_Site=site)[0] == 403
    reader = EventReader(running, headers={"Cookie": cookie, "Sec-Fetch-Site": site})
    try:
        assert reader.response.status == 403
    finally:
        reader.close()
    assert ask(running, "GET", "/dashboard", Cookie=cookie, Sec_Fetch_Site="same-origin")[0] == 200
    assert ask(running, "GET", "/dashboard", Cookie=cookie, Sec_Fetch_Site="none")[0] == 200


@pytest.mark.parametrize("site, signed_in", [("cross-site", False), ("same-site", True)])
def test_a_link_to_the_page_from_another_site_goes_to_the_page_again_showing_nothing(running, site, signed_in):
    """SameSite=Strict holds the cookie back from a link on another site's page (and the
    refusal above would refuse a same-site one): such a link gets a page that navigates
    to the dashboard again, as the dashboard's own navigation, and shows nothing itself."""
    cookie = {"Cookie": sign_in(running)} if signed_in else {}
    status, headers, body = ask(running, "GET", "/dashboard", Sec_Fetch_Site=site, Sec_Fetch_Mode="navigate",
                                **cookie)

    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'location.replace("/dashboard")' in body
    assert b"EventSource" not in body and len(body) < 1000
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    data = ask(running, "GET", "/dashboard/data", Sec_Fetch_Site=site, Sec_Fetch_Mode="navigate", **cookie)
    assert data[0] == (403 if signed_in else 401)  # only the page itself is navigated to again


def test_a_refused_sign_in_link_leaves_no_code_in_the_log(running):
    path = get_link(running)
    code = path.partition("code=")[2]
    ask(running, "GET", path, Origin="http://attacker.example")
    ask(running, "GET", "/dashboard/login?code=made-up")
    assert "/dashboard/login?code=…" in running.log_text()
    assert code not in running.log_text() and "made-up" not in running.log_text()


# --- what the cookie opens, and what it does not ----------------------------------------------------------


def test_the_cookie_opens_the_live_feed(running):
    reader = EventReader(running, headers={"Cookie": sign_in(running)})
    try:
        assert reader.response.status == 200
        name, status = reader.next()
        assert name == "status" and [p["name"] for p in status["providers"]] == ["p1", "p2"]
    finally:
        reader.close()


def test_the_cookie_changes_things_only_from_the_page_itself(running):
    cookie = sign_in(running)
    control = "/control?action=disable&provider=p1"

    assert ask(running, "POST", control, Cookie=cookie)[0] == 403  # no Origin: not a page's fetch
    assert ask(running, "POST", control, Cookie=cookie, Origin=f"http://127.0.0.1:1")[0] == 403
    assert ask(running, "POST", control, Cookie=cookie, Origin=f"http://localhost:{running.server.port}")[0] == 403
    assert running.policy.snapshot()[0]["state"] == "ready"

    status, _, body = ask(running, "POST", control, Cookie=cookie, Origin=own_origin(running))
    assert status == 200 and json.loads(body)["providers"] == ["p1"]
    assert running.policy.snapshot()[0]["state"] == "disabled"


def test_the_cookie_is_not_a_token_for_anything_else(running):
    cookie = sign_in(running)
    origin = own_origin(running)
    assert ask(running, "GET", "/status", Cookie=cookie)[0] == 401
    assert ask(running, "POST", "/shutdown", Cookie=cookie, Origin=origin)[0] == 401
    assert running.post(headers={"x-api-key": "", "Cookie": cookie})[0] == 401
    assert not running.server.stopping


def test_without_require_token_the_dashboard_is_still_protected(proxy, providers):
    running = proxy(providers(Reply()), require_token=False)
    assert ask(running, "GET", "/dashboard")[0] == 401
    assert ask(running, "GET", "/dashboard/data")[0] == 401
    assert ask(running, "POST", "/dashboard/link")[0] == 401
    assert ask(running, "POST", "/control?action=disable&provider=p1")[0] == 401


def test_unknown_dashboard_paths_and_methods_are_answered_here_not_forwarded(proxy, providers):
    provider = providers(Reply())
    running = proxy(provider)
    cookie = sign_in(running)
    assert ask(running, "GET", "/dashboard/nothing", Cookie=cookie)[0] == 404
    status, headers, _ = ask(running, "POST", "/dashboard", Cookie=cookie, Origin=own_origin(running))
    assert status == 405 and headers["allow"] == "GET"
    assert ask(running, "GET", "/dashboard/link", x_api_key=running.token)[0] == 405
    status, headers, body = ask(running, "HEAD", "/dashboard", Cookie=cookie)
    assert status == 200 and body == b"" and int(headers["content-length"]) > 1000
    assert provider.requests == []


# --- the page -----------------------------------------------------------------------------------------------


def test_the_page_is_self_contained_and_runs_only_its_own_script(running):
    status, headers, body = ask(running, "GET", "/dashboard", Cookie=sign_in(running))
    page = body.decode()

    policy = headers["content-security-policy"]
    nonce = re.search(r"script-src 'nonce-([^']+)'", policy).group(1)
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert headers["x-frame-options"] == "DENY"
    assert page.count(f'nonce="{nonce}"') == 2  # the style and the script
    assert "{{nonce}}" not in page
    assert not re.search(r"""(src|href)=["'](https?:)?//""", page), "nothing from another address"
    assert not re.search(r"""\son[a-z]+=""", page), "no inline handlers (the policy would block them)"
    second = ask(running, "GET", "/dashboard", Cookie=sign_in(running))[1]["content-security-policy"]
    assert second != policy  # a new nonce each time


def test_the_token_and_the_keys_appear_nowhere_in_the_page_its_links_or_its_data(running):
    path = get_link(running)
    _, login_headers, login_body = ask(running, "GET", path)
    cookie = login_headers["set-cookie"].split(";")[0]
    _, _, page = ask(running, "GET", "/dashboard", Cookie=cookie)
    _, _, data = ask(running, "GET", "/dashboard/data", Cookie=cookie)

    keys = [p.api_key for p in running.config.providers]
    for text in (path, login_headers["location"], cookie, login_body.decode(), page.decode(), data.decode()):
        assert running.token not in text
        assert not any(key in text for key in keys)
    assert json.loads(data)["keys"] == {"p1": ["****p1-0"], "p2": ["****p2-1"]}


def test_the_page_file_ships_inside_the_package():
    assert dashboard.PAGE_FILE.parent.name == "claude_proxy" and dashboard.PAGE_FILE.is_file()


# --- the data endpoint ---------------------------------------------------------------------------------------------


def local_noon(day):
    import datetime

    return datetime.datetime.combine(datetime.date.fromisoformat(day), datetime.time(12)).timestamp()


def write_usage(path, rows):
    """A usage.db with ``rows``: ``(time, provider, ttfb_ms, input, output, [(provider, outcome, passed_on)])``."""
    conn = sqlite3.connect(path)
    for number, statements in enumerate(MIGRATIONS):
        for statement in statements:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number + 1}")
    for at, provider, ttfb, tokens_in, tokens_out, attempts in rows:
        values = dict.fromkeys(REQUEST_COLUMNS)
        values.update(time=at, mode="fallback", method="POST", path="/v1/messages", provider=provider,
                      outcome="ok", stream=0, failovers=sum(a[2] for a in attempts), ttfb_ms=ttfb, total_ms=1.0,
                      input_tokens=tokens_in, output_tokens=tokens_out, cache_read_input_tokens=1,
                      cache_creation_input_tokens=2)
        request_id = conn.execute(INSERT_REQUEST, [None, *(values[c] for c in REQUEST_COLUMNS)]).lastrowid  # id: the next
        conn.executemany(INSERT_ATTEMPT, [(request_id, seq, name, None, outcome, passed_on)
                                          for seq, (name, outcome, passed_on) in enumerate(attempts)])
    conn.commit()
    conn.close()


def test_the_figures_from_a_usage_db_with_known_rows(tmp_path):
    now = local_noon("2026-06-10")
    path = tmp_path / "usage.db"
    write_usage(path, [
        (now - 20 * 86400, "alpha", 100, 7, 7, [("alpha", "200", 0)]),         # before the 14 days
        (now - 2 * 86400, "alpha", 300, 1000, 500, [("alpha", "200", 0)]),      # 06-08
        (now - 3 * 3600, None, None, 0, 0, [("alpha", "529", 1), ("beta", "503", 0)]),  # all failed
        (now - 2 * 3600, "alpha", 500, 20, 10, [("alpha", "200", 0)]),          # today, not in the last hour
        (now - 1800, "alpha", 400, 100, 50, [("alpha", "200", 0)]),
        (now - 1200, "beta", 900, 10, 5, [("alpha", "529", 1), ("beta", "200", 0)]),
    ])

    answer = figures(path, 14, now=now)

    assert answer["usage_record"] is True and answer["problem"] is None
    assert answer["days"][0] == "2026-05-28" and answer["days"][-1] == "2026-06-10" and len(answer["days"]) == 14
    assert answer["tokens"] == [
        {"day": "2026-06-08", "provider": "alpha", "input": 1000, "output": 500, "cache_read": 1,
         "cache_creation": 2, "requests": 1},
        {"day": "2026-06-10", "provider": "alpha", "input": 120, "output": 60, "cache_read": 2,
         "cache_creation": 4, "requests": 2},
        {"day": "2026-06-10", "provider": "beta", "input": 10, "output": 5, "cache_read": 1,
         "cache_creation": 2, "requests": 1},
    ]
    assert answer["ttft"] == [{"time": now - 1800, "provider": "alpha", "ttft_ms": 400.0},
                              {"time": now - 1200, "provider": "beta", "ttft_ms": 900.0}]
    assert answer["failovers"] == [
        {"time": now - 3 * 3600, "provider": "alpha", "outcome": "529", "answered_by": None},
        {"time": now - 1200, "provider": "alpha", "outcome": "529", "answered_by": "beta"}]


def test_the_figures_without_a_record_or_with_an_unreadable_one(tmp_path):
    off = figures(None, 3, now=local_noon("2026-06-10"))
    assert off["usage_record"] is False and off["tokens"] == off["ttft"] == off["failovers"] == []
    assert off["days"] == ["2026-06-08", "2026-06-09", "2026-06-10"]
    assert figures(tmp_path / "missing.db", 1)["tokens"] == []

    garbage = tmp_path / "usage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    answer = figures(garbage, 1)
    assert answer["tokens"] == [] and "cannot read usage.db" in answer["problem"]


def test_the_data_endpoint_reads_the_proxys_usage_db(proxy, providers, tmp_path):
    now = time.time()
    write_usage(tmp_path / "usage.db", [(now - 30, "p2", 250, 40, 4, [("p1", "529", 1), ("p2", "200", 0)])])
    running = proxy(providers(Reply()), providers(Reply()))
    cookie = sign_in(running)

    status, headers, body = ask(running, "GET", "/dashboard/data?days=2", Cookie=cookie)

    assert status == 200 and headers["cache-control"] == "no-store"
    answer = json.loads(body)
    assert len(answer["days"]) == 2
    assert [(t["provider"], t["input"], t["output"]) for t in answer["tokens"]] == [("p2", 40, 4)]
    assert [(t["provider"], t["ttft_ms"]) for t in answer["ttft"]] == [("p2", 250.0)]
    assert [(f["provider"], f["answered_by"]) for f in answer["failovers"]] == [("p1", "p2")]
    assert ask(running, "GET", "/dashboard/data", Cookie=cookie)[0] == 200  # 14 days by default
    assert len(json.loads(ask(running, "GET", "/dashboard/data", Cookie=cookie)[2])["days"]) == 14


@pytest.mark.parametrize("days", ["0", "367", "abc", "-1", "2.5"])
def test_the_data_endpoint_refuses_a_bad_number_of_days(running, days):
    assert ask(running, "GET", f"/dashboard/data?days={days}", Cookie=sign_in(running))[0] == 400


def test_the_data_endpoint_says_when_the_usage_record_is_off(proxy, providers):
    running = proxy(providers(Reply()), usage_record=False)
    answer = json.loads(ask(running, "GET", "/dashboard/data", Cookie=sign_in(running))[2])
    assert answer["usage_record"] is False and answer["tokens"] == []


# --- proxy.py dashboard ------------------------------------------------------------------------------------------


def test_the_command_says_in_one_line_when_the_proxy_is_not_running(workspace, fake):
    config = workspace.config([("p1", fake(Reply()).url)])
    result = workspace.run("dashboard", "--no-browser", config=config)
    assert_one_line_error(result)
    assert "not running" in result.stderr and "start" in result.stderr


@pytest.fixture
def started(workspace, fake):
    config = workspace.config([("p1", fake(Reply()).url)])
    workspace.keys(KEY_P1="secret-key-of-p1")
    assert workspace.run("start", "--quiet", config=config).returncode == 0
    return workspace, config


def test_the_command_prints_a_one_time_link_with_no_browser(started):
    workspace, config = started
    result = workspace.run("dashboard", "--no-browser", config=config)

    assert result.returncode == 0, result.stderr
    url = result.stdout.strip()
    base = url_of(workspace.record(config))
    assert re.fullmatch(re.escape(base) + r"/dashboard/login\?code=[A-Za-z0-9_-]{40,}", url)
    assert "once" in result.stderr
    token = workspace.token(config)
    assert token not in result.stdout + result.stderr
    path = url[len(base):]
    assert request(base, "GET", path)[0] == 303
    assert request(base, "GET", path)[0] == 401


def test_the_command_opens_the_link_in_the_browser(started, tmp_path):
    workspace, config = started
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\necho "$1" >> "{opened}"\n')
    browser.chmod(0o700)
    result = workspace.run("dashboard", config=config, env={"BROWSER": str(browser)})

    assert result.returncode == 0, result.stderr
    base = url_of(workspace.record(config))
    assert result.stdout.strip() == f"opened the dashboard in your browser ({base}/dashboard)"
    url = opened.read_text().strip()
    assert url.startswith(f"{base}/dashboard/login?code=")
    assert workspace.token(config) not in url
    assert request(base, "GET", url[len(base):])[0] == 303


def test_the_command_prints_the_link_when_no_browser_opens(started):
    workspace, config = started
    out, err, tried = io.StringIO(), io.StringIO(), []

    def opener(url):
        tried.append(url)
        return False

    assert cmd_dashboard(argparse.Namespace(config=str(config), no_browser=False), out, err, opener) == 0
    assert "no browser could be opened" in err.getvalue()
    assert out.getvalue().strip() == tried[0] and "/dashboard/login?code=" in tried[0]


def test_without_a_display_the_link_is_printed_rather_than_opened_in_a_text_browser():
    assert not graphical_browser_possible({}, "linux")
    assert graphical_browser_possible({"DISPLAY": ":0"}, "linux")
    assert graphical_browser_possible({"WAYLAND_DISPLAY": "wayland-0"}, "freebsd13")
    assert graphical_browser_possible({"BROWSER": "firefox"}, "linux")
    assert graphical_browser_possible({}, "darwin") and graphical_browser_possible({}, "win32")
