"""The dashboard in a real browser: headless Chromium driven by Playwright.

The browser is the system's Chromium (Debian's ``chromium`` package, or the
one ``$CLAUDE_PROXY_CHROMIUM`` names), else the one Playwright installed
itself (``playwright install chromium``); these tests never download one.
Without Playwright or a Chromium they skip, saying why, except in CI
(``CI=true``, or ``CLAUDE_PROXY_REQUIRE_BROWSER=1`` as ``.ci/run`` sets),
where that is a failure.

Screenshots, light and dark, are saved to ``$CLAUDE_PROXY_ARTIFACTS`` if set,
else to ``tests/artifacts/`` (ignored by git).
"""

import os
import re
import shutil
import threading
from pathlib import Path

import pytest

from fakes import ControlledFakeProvider, Reply, eventually, request
from test_dashboard import get_link

from claude_proxy.http_server import ProxyServer

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("CLAUDE_PROXY_ARTIFACTS") or ROOT / "tests" / "artifacts")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-default-apps", "--no-first-run", "--disable-dev-shm-usage"]
SECONDS = 1000  # Playwright's timeouts are in ms


def unavailable(reason):
    if os.environ.get("CI") == "true" or os.environ.get("CLAUDE_PROXY_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}; in CI the browser tests must run, not skip")
    pytest.skip(reason)


def system_chromium():
    named = os.environ.get("CLAUDE_PROXY_CHROMIUM")
    if named:
        return named
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        unavailable("Playwright is not installed (pip install -r tests/requirements.txt)")
    executable = system_chromium()
    playwright = sync_playwright().start()
    try:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
    except Error as exc:  # no browser where we looked: say which, in one line
        playwright.stop()
        where = executable or "Playwright's own browsers"
        unavailable(f"no Chromium to run (tried {where}: {str(exc).strip().splitlines()[0]}); install "
                    "Debian's chromium, or set CLAUDE_PROXY_CHROMIUM")
    yield launched
    launched.close()
    playwright.stop()


@pytest.fixture
def page_of(browser):
    """``page_of(running)``: a new browser page signed in to that proxy's dashboard through a
    one-time link.  Its ``errors`` list the page's script errors; ``urls`` every URL it asked for."""
    contexts = []

    def open_page(running, **options):
        context = browser.new_context(viewport={"width": 1280, "height": 1000}, **options)
        contexts.append(context)
        page = context.new_page()
        page.errors, page.urls = [], []
        page.on("pageerror", lambda error: page.errors.append(str(error)))
        page.on("console", lambda message: message.type == "error" and page.errors.append(message.text))
        context.on("request", lambda request: page.urls.append(request.url))
        page.goto(running.url + get_link(running))
        assert page.url == running.url + "/dashboard"  # the code left the address bar
        return page

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def controlled():
    made = []

    def make(name):
        made.append(ControlledFakeProvider(name))
        return made[-1]

    yield make
    for fake in made:
        fake.close()


def expect(locator):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def screenshot(page, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_the_dashboard_follows_the_proxy_live_and_its_buttons_control_it(proxy, controlled, page_of):
    alpha, beta = controlled("alpha"), controlled("beta")
    running = proxy(alpha, beta, names=["alpha", "beta"])
    assert running.post()[0] == 200
    page = page_of(running, color_scheme="light")
    card = {name: page.locator(f'.card[data-provider="{name}"]') for name in ("alpha", "beta")}

    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(card["alpha"]).to_have_attribute("data-state", "ready")
    expect(card["beta"]).to_have_attribute("data-state", "ready")
    expect(card["alpha"].locator('[data-field="keys"]')).to_have_text("****ha-0 (KEY_ALPHA)")

    alpha.mode = "overloaded"
    assert running.post({"model": "claude-x", "stream": True, "messages": []})[0] == 200

    expect(card["alpha"]).to_have_attribute("data-state", "cooling", timeout=5 * SECONDS)
    expect(card["alpha"].locator(".state")).to_have_text(re.compile(r"cooling \d+m \d\ds"))
    expect(card["alpha"].locator(".error")).to_contain_text("529")
    expect(page.locator("#recent tbody tr").first).to_contain_text("alpha 529 → beta 200")
    expect(page.locator('#chart-failovers rect.failover[data-provider="alpha"]')).to_have_count(1)
    expect(page.locator('#chart-ttft circle[data-provider="beta"]')).to_have_count(1)
    expect(page.locator('#chart-tokens rect[data-provider="beta"]')).to_have_count(1)
    screenshot(page, "dashboard-light.png")
    page.emulate_media(color_scheme="dark")
    screenshot(page, "dashboard-dark.png")

    card["alpha"].locator('button[data-action="uncool"]').click()
    expect(card["alpha"]).to_have_attribute("data-state", "ready", timeout=5 * SECONDS)
    assert running.policy.snapshot()[0]["state"] == "ready"
    expect(page.locator("#toast")).to_have_text("alpha: cooldown cleared")

    card["beta"].locator('button[data-action="disable"]').click()
    expect(card["beta"]).to_have_attribute("data-state", "disabled", timeout=5 * SECONDS)
    assert running.policy.snapshot()[1]["state"] == "disabled"
    card["beta"].locator('button[data-action="enable"]').click()
    expect(card["beta"]).to_have_attribute("data-state", "ready", timeout=5 * SECONDS)

    cookie, = [c for c in page.context.cookies() if c["name"] == f"claude_proxy_{running.server.port}"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # no script can read it
    assert not [url for url in page.urls if running.token in url]
    assert not [url for url in page.urls if not url.startswith(running.url)], "nothing from anywhere else"
    assert running.token not in page.content()
    assert page.errors == []


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])  # another site; the same site, another port
def test_a_sign_in_link_followed_from_another_page_signs_in(proxy, providers, browser, host):
    running = proxy(providers(Reply()))
    link = running.url + get_link(running)
    other = providers(Reply(200, f'<a id="go" href="{link}">the dashboard</a>'.encode(), content_type="text/html"))
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"http://{host}:{other.port}/")
        page.click("#go")
        expect(page.locator("#connection")).to_have_attribute("data-state", "live")
        assert page.url == running.url + "/dashboard"
    finally:
        context.close()


def test_without_the_usage_record_the_tokens_picture_counts_since_the_start(proxy, providers, page_of):
    running = proxy(providers(Reply()), usage_record=False)
    assert running.post()[0] == 200
    page = page_of(running)

    expect(page.locator("#tokens-caption")).to_have_text("Tokens since the proxy started (input + output)")
    expect(page.locator('#chart-tokens rect[data-provider="p1"]')).to_have_count(1)
    expect(page.locator('#chart-ttft circle[data-provider="p1"]')).to_have_count(1)  # from the last requests
    assert page.errors == []


def test_a_broken_config_and_its_fix_show_on_the_page_live(proxy, providers, page_of):
    fake = providers(Reply())
    running = proxy(fake)
    page = page_of(running)
    note = page.locator("#config-note")
    expect(note).to_be_hidden()

    running.config_path.write_text("{", encoding="utf-8")  # a save gone wrong: read within a second
    expect(note).to_contain_text("config error since ", timeout=5000)
    expect(note).to_contain_text("invalid JSON at line 1")
    screenshot(page, "dashboard-config-error.png")
    running.write_config([{"name": "p1", "base_url": fake.url, "api_key_env": "KEY_P1"}])
    expect(note).to_be_hidden(timeout=5000)
    assert page.errors == []


def test_the_page_says_when_the_proxy_is_down_and_when_a_restart_signed_it_out(proxy, providers, page_of):
    running = proxy(providers(Reply()))
    page = page_of(running)
    badge = page.locator("#connection")
    expect(badge).to_have_attribute("data-state", "live")
    port = running.server.port

    running.server.stop_soon(grace=0)  # as `proxy.py stop` does
    running.thread.join(10)
    running.server.server_close()
    expect(badge).to_have_attribute("data-state", "down", timeout=10 * SECONDS)
    expect(badge).to_have_text("not running — retrying")

    running.config.port = port  # the same proxy again: it knows no session
    again = ProxyServer(running.config, running.token, running.paths.token)
    running.server, running.thread = again, threading.Thread(  # the fixture stops this one
        target=again.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    running.thread.start()
    expect(badge).to_have_attribute("data-state", "signed-out", timeout=15 * SECONDS)
    expect(page.locator("#meta")).to_contain_text("run proxy.py dashboard")
    page.errors[:] = [e for e in page.errors if "ERR_CONNECTION_REFUSED" not in e and "401" not in e]
    assert page.errors == []


def test_a_provider_no_longer_configured_keeps_its_colour_in_the_tokens_legend(proxy, providers, page_of):
    first, second = providers(Reply()), providers(Reply())
    running = proxy(first, second)
    assert running.post(prefix="/provider/p2")[0] == 200
    running.write_config([{"name": "p1", "base_url": first.url, "api_key_env": "KEY_P1"}])
    assert running.server.reload("test")["changes"] == ["providers removed: p2"]
    assert eventually(lambda: b'"p2"' in request(running.url, "GET", "/dashboard/data",
                                                 headers=running.auth())[2])
    page = page_of(running)

    expect(page.locator('#chart-tokens rect[data-provider="p2"]')).to_have_count(1)
    expect(page.locator("#legend-tokens")).to_have_text("p2")  # its bar has a name
    expect(page.locator("#legend-ttft")).to_have_text("p2")
    assert page.errors == []
