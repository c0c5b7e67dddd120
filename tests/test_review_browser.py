"""The reviewer pages in a real headless Chromium (Playwright), served by uvicorn on an ephemeral port.

Needs Debian's Chromium at /usr/bin/chromium (`apt-get install -y chromium`): without it these
tests skip, or fail when CI=true so that a CI machine missing it is noticed.
Set REVIEW_SCREENSHOTS=/some/dir to also save narrow-viewport screenshots of the pages.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn

from tests.harness import loopback_socket, serving_on
from tests.test_review_pages import (
    PASSWORD,
    RECORDED_TURNS,
    USER,
    FakeReader,
    make_app,
    sample_calls,
    signin_settings,
    write_wav,
)

@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[str]:
    reader = FakeReader(sample_calls(), {1: write_wav(tmp_path / "call-1.wav")})
    sock, port = loopback_socket()
    app = make_app(reader, signin_settings())
    async with serving_on(sock, uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")):
        yield f"http://127.0.0.1:{port}"


async def new_page(browser, **context_options):
    context = await browser.new_context(**context_options)
    page = await context.new_page()
    page.set_default_timeout(15_000)
    return page


async def sign_in(page, base: str, path: str = "/calls") -> None:
    await page.goto(base + path)
    assert "/review/login" in page.url
    await page.fill("input[name=username]", USER)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(base + path)


async def test_sign_in_search_and_open_a_call(server, browser):
    page = await new_page(browser)
    await page.goto(server + "/calls")
    await page.fill("input[name=username]", USER)
    await page.fill("input[name=password]", "wrong")
    await page.click("button[type=submit]")
    assert "incorrect" in await page.text_content(".alert")
    await sign_in(page, server)
    assert await page.locator("tr.call").count() == 25
    assert "Page 1 sur 2" in await page.text_content(".pager")

    await page.fill("input[name=text]", "couveuse")
    await page.press("input[name=text]", "Enter")
    await page.wait_for_url("**/calls?text=couveuse*")
    assert await page.locator("tr.call").count() == 1
    assert "1 appel correspondant" in await page.text_content("#total")

    await page.click("tr.call a")
    await page.wait_for_url(server + "/calls/1")
    assert await page.locator(".turn").count() == 4
    assert await page.locator(".turn.caller").first.text_content() is not None
    assert "interrompu après 2,4 s" in await page.text_content("#turn-1")
    # The CSP lets the page's own script run: the transcript is wired to the player.
    assert await page.evaluate("document.querySelectorAll('.turn[data-start-ms]').length") == 4


async def test_the_recording_plays_and_the_transcript_follows(server, browser):
    page = await new_page(browser)
    await sign_in(page, server, "/calls/1")
    await page.evaluate("""() => {
        const audio = document.getElementById('recording');
        window.playingSeen = false;
        audio.addEventListener('playing', () => { window.playingSeen = true; });
    }""")
    # A user click on the first turn's button seeks there and starts playback.
    await page.click("#turn-0 button.seek")
    await page.wait_for_function("() => window.playingSeen === true")
    await page.wait_for_function("() => document.getElementById('recording').currentTime > 0.6")
    await page.evaluate("document.getElementById('recording').pause()")

    # Moving the playback to a later turn moves the highlight there.
    later = RECORDED_TURNS[3][2] / 1000 + 0.05
    await page.evaluate(f"document.getElementById('recording').currentTime = {later}")
    await page.wait_for_function("() => document.getElementById('turn-3').classList.contains('playing')")
    assert await page.evaluate("document.querySelectorAll('.turn.playing').length") == 1
    assert await page.get_attribute("#turn-3", "aria-current") == "true"

    # Clicking a turn's bubble seeks the audio to that turn's start.
    await page.click("#turn-2 .text")
    await page.wait_for_function("() => document.getElementById('turn-2').classList.contains('playing')")
    position = await page.evaluate("document.getElementById('recording').currentTime")
    assert RECORDED_TURNS[2][2] / 1000 <= position < RECORDED_TURNS[2][3] / 1000
    assert not await page.evaluate("document.getElementById('turn-3').classList.contains('playing')")


async def test_the_pages_fit_a_phone_screen(server, browser):
    page = await new_page(browser, viewport={"width": 375, "height": 740}, device_scale_factor=2, is_mobile=True,
                          has_touch=True)
    await sign_in(page, server)
    fits = "document.documentElement.scrollWidth <= window.innerWidth"
    assert await page.evaluate(fits)
    assert await page.evaluate("getComputedStyle(document.querySelector('table.calls thead')).display") == "none"
    card = await page.locator("tr.call").first.bounding_box()
    assert card["width"] <= 375
    shots = os.environ.get("REVIEW_SCREENSHOTS")
    if shots:
        await page.screenshot(path=str(Path(shots) / "review-calls-375.png"), full_page=True)
    await page.goto(server + "/calls/1")
    assert await page.evaluate(fits)
    caller = await page.locator("#turn-0").bounding_box()
    octi = await page.locator("#turn-1").bounding_box()
    assert caller["x"] < octi["x"] and octi["x"] + octi["width"] <= 375  # chat layout: caller left, OCTI right
    if shots:
        await page.locator("#turn-0 details summary").click()
        await page.screenshot(path=str(Path(shots) / "review-call-375.png"), full_page=True)
