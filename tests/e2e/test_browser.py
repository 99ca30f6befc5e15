"""The demo page in real headless Chromium (Debian's, driven by Playwright): same-origin chat
with streaming and the cache indicator, cross-origin calls allowed and blocked, errors, and a
phone-width layout. Each test saves a screenshot under tests/artifacts/ (git-ignored)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright import sync_api
from starlette.applications import Starlette
from starlette.responses import RedirectResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from proxy import Settings, create_app
from tests.support.fault_space import FaultSpace
from tests.support.servers import ThreadServer, free_port
from tests.support.spy import SpyUpstream

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        raise RuntimeError("Debian's chromium is missing: run scripts/system-deps.sh")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    tab = context.new_page()
    tab.console_errors = []
    tab.on("console", lambda m: m.type == "error" and tab.console_errors.append(m.text))
    yield tab
    ARTIFACTS.mkdir(exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()


def gateway(**values: Any) -> ThreadServer:
    return ThreadServer(create_app(Settings(**values)))


def static_site() -> ThreadServer:
    """The demo page's files served from another origin, as a separate front end would be."""
    files = StaticFiles(packages=[("proxy", "static")], html=True)
    app = Starlette(
        routes=[
            Route("/", lambda request: RedirectResponse(f"/static/index.html?{request.url.query}")),
            Mount("/static", files),
        ]
    )
    return ThreadServer(app, lifespan="off")


def ask(page: Any, text: str) -> None:
    page.get_by_label("Your message").fill(text)
    page.keyboard.press("Enter")


def last_reply(page: Any) -> Any:
    return page.locator(".message.assistant").last


def test_same_origin_chat_streams_and_shows_cache_hits(page: Any) -> None:
    with gateway(mock_token_delay_ms=40) as server:
        page.goto(server.url)
        expect = sync_api.expect
        expect(page.locator("#banner")).to_contain_text("Test mode")
        expect(page.get_by_label("Model")).to_have_value("llama-2-7b-chat")
        ask(page, "How can I sleep better?")
        # Mid-stream: some text is shown while the reply is still arriving.
        page.wait_for_function(
            "() => { const m = [...document.querySelectorAll('.message.assistant')].pop();"
            " return m && m.getAttribute('aria-busy') === 'true'"
            " && m.querySelector('.text').textContent.length > 0; }"
        )
        partial = last_reply(page).locator(".text").text_content()
        expect(last_reply(page).locator(".meta")).to_be_visible(timeout=15000)
        final = last_reply(page).locator(".text").text_content()
        assert 0 < len(partial) < len(final)
        assert final.startswith(partial)
        assert "not medical advice" in final
        expect(last_reply(page).locator(".cache-hit")).to_have_count(0)
        expect(page.locator("#api-curl")).to_contain_text("/api/chat")
        expect(page.locator("#api-curl")).to_contain_text("How can I sleep better?")
        expect(page.locator("#api-fetch")).to_contain_text('method: "POST"')

        page.reload()  # a new conversation: the same first message hits the cache
        ask(page, "How can I sleep better?")
        expect(last_reply(page).locator(".cache-hit")).to_be_visible(timeout=15000)
        assert last_reply(page).locator(".text").text_content() == final
    assert page.console_errors == []


def test_stop_button_stops_the_stream(page: Any) -> None:
    with gateway(mock_token_delay_ms=200) as server:
        page.goto(server.url)
        ask(page, "Tips for exercise?")
        page.wait_for_function(
            "() => document.querySelector('.message.assistant .text')?.textContent.length > 0"
        )
        page.get_by_role("button", name="Stop").click()
        sync_api.expect(last_reply(page).locator(".meta")).to_have_text("stopped")
        sync_api.expect(page.get_by_role("button", name="Send")).to_be_enabled()


def test_cross_origin_page_allowed_by_default(page: Any) -> None:
    with gateway(mock_token_delay_ms=5) as api, static_site() as site:
        # localhost:<any port> is on the default allow-list; the API is on 127.0.0.1.
        page.goto(f"http://localhost:{site.port}/?api={api.url}")
        sync_api.expect(page.locator("#banner")).to_contain_text("Test mode")
        ask(page, "How much water should I drink?")
        sync_api.expect(last_reply(page).locator(".meta")).to_be_visible(timeout=15000)
        assert "water" in last_reply(page).locator(".text").text_content().lower()


def test_cross_origin_page_not_on_the_allow_list_is_blocked(
    page: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = SpyUpstream()
    monkeypatch.setattr("proxy.app.build_upstream", lambda settings: spy)
    with static_site() as site:
        allowed_only = f"http://localhost:{free_port()}"
        with gateway(allowed_origins=allowed_only) as api:
            page.goto(f"http://127.0.0.1:{site.port}/?api={api.url}")
            sync_api.expect(page.locator("#error")).to_contain_text("Could not reach the gateway")
            ask(page, "Is this allowed?")
            sync_api.expect(page.locator("#error")).to_contain_text("Could not reach the gateway")
    assert spy.calls == 0 and spy.stream_calls == 0  # the browser never sent the POST


def test_a_crafted_api_link_cannot_send_prompts_elsewhere(
    page: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway's own page, opened from a link with ?api= pointing at another server that
    would gladly answer any origin: its Content-Security-Policy keeps the prompt home."""
    spy = SpyUpstream()
    monkeypatch.setattr("proxy.app.build_upstream", lambda settings: spy)
    with gateway(allowed_origins="*") as elsewhere:
        monkeypatch.undo()
        with gateway() as home:
            page.goto(f"{home.url}/?api={elsewhere.url}")
            ask(page, "My private symptom is a rash")
            sync_api.expect(page.locator("#error")).to_contain_text("Could not reach the gateway")
    assert spy.calls == 0 and spy.stream_calls == 0


def test_rate_limited_upstream_shows_message_and_countdown(
    page: Any, fault_space: FaultSpace
) -> None:
    with gateway(upstream_url=f"{fault_space.url}/ratelimit") as server:
        page.goto(server.url)
        ask(page, "Hello?")
        error = page.locator("#error")
        sync_api.expect(error).to_contain_text("Rate limited")
        sync_api.expect(error).to_contain_text("upstream_rate_limited")
        sync_api.expect(error).to_contain_text("Retry in 4")  # Retry-After: 42, counting down
        sync_api.expect(page.get_by_role("button", name="Send")).to_be_disabled()


def test_upstream_down_shows_the_502_message(page: Any) -> None:
    with gateway(upstream_url=f"http://127.0.0.1:{free_port()}", upstream_connect_timeout=1) as s:
        page.goto(s.url)
        ask(page, "Hello?")
        sync_api.expect(page.locator("#error")).to_contain_text("cannot connect to the upstream")
        sync_api.expect(page.locator("#error")).to_contain_text("upstream_unreachable")


def test_phone_width_and_labels(browser: Any) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    try:
        with gateway(mock_token_delay_ms=0) as server:
            page.goto(server.url)
            sync_api.expect(page.get_by_label("Model")).to_have_value("llama-2-7b-chat")
            for label in ("Your message", "Model", "Max new tokens"):
                sync_api.expect(page.get_by_label(label)).to_be_visible()
            assert page.evaluate("document.scrollingElement.scrollWidth") <= 390
            page.keyboard.press("Tab")  # keyboard reaches the message box
            ask(page, "Tips for stress?")
            sync_api.expect(last_reply(page).locator(".meta")).to_be_visible(timeout=15000)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "phone.png"), full_page=True)
    finally:
        context.close()


def test_bad_input_shows_what_to_fix(page: Any) -> None:
    with gateway(mock_token_delay_ms=0) as server:
        page.goto(server.url)
        sync_api.expect(page.get_by_label("Model")).to_have_value("llama-2-7b-chat")
        page.get_by_label("Max new tokens").fill("5000")
        ask(page, "Hello?")
        error = page.locator("#error")
        sync_api.expect(error).to_contain_text("max_new_tokens must be an integer from 1 to 1024")
        sync_api.expect(error).to_contain_text("invalid_parameter")
        sync_api.expect(page.locator(".message.assistant")).to_have_count(0)
