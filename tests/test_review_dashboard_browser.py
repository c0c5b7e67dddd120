"""The KPI dashboard in a real headless Chromium on a phone-sized screen, over a real call log
(the calls of test_review_dashboard.py in SQLite), served by uvicorn on an ephemeral port.

Skips without Debian's Chromium (fails when CI=true), as test_review_browser.py does.
Set REVIEW_SCREENSHOTS=/some/dir to also save screenshots of the page.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn

from app.calllog.migrate import upgrade_database
from app.calllog.store import CallLogStore
from tests.harness import loopback_socket, serving_on
from tests.test_review_browser import new_page, sign_in
from tests.test_review_dashboard import CALLS, END
from tests.test_review_pages import make_app, signin_settings

PHONE_SCREEN = {"viewport": {"width": 360, "height": 740}, "device_scale_factor": 2, "is_mobile": True,
                "has_touch": True}
FITS = "document.documentElement.scrollWidth <= window.innerWidth"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[str]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'calls.sqlite3'}"
    await upgrade_database(url)
    store = await CallLogStore.open(url)
    for records in CALLS:
        await store.apply(records)
    sock, port = loopback_socket()
    app = make_app(store, signin_settings())
    try:
        async with serving_on(sock, uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")):
            yield f"http://127.0.0.1:{port}"
    finally:
        await store.close()


async def screenshot(page, name: str) -> None:
    shots = os.environ.get("REVIEW_SCREENSHOTS")
    if shots:
        await page.screenshot(path=str(Path(shots) / name), full_page=True)


async def test_the_charts_render_on_a_phone(server, browser):  # noqa: F811
    page = await new_page(browser, **PHONE_SCREEN)
    await sign_in(page, server, f"/tableau-de-bord?end={END}")
    assert await page.title() == "Tableau de bord · OCTI"
    assert await page.evaluate(FITS)

    charts = page.locator("svg.kpi-chart")
    assert await charts.count() == 6
    for index in range(6):
        svg = charts.nth(index)
        box = await svg.bounding_box()
        assert box is not None and 250 <= box["width"] <= 360 and box["height"] > 100   # drawn, and fits
        # A line per channel, named in French for screen readers and in the legend.
        channels = await svg.evaluate("s => [...s.querySelectorAll('g.series')].map(g => g.dataset.channel)")
        assert sorted(channels) == ["all", "phone", "web"]
        names = await svg.evaluate("s => [...s.querySelectorAll('g.series > title')].map(t => t.textContent)")
        assert sorted(names) == ["ensemble", "navigateur", "téléphone"]
        assert await svg.get_attribute("role") == "img"
    legend = await page.locator("#kpi-latency .legend").inner_text()
    assert legend.split() == ["téléphone", "navigateur", "ensemble"]

    latency = page.locator("#chart-latency")
    assert await latency.locator("title").first.text_content() == "Latence de réponse (P95), par jour"
    labels = await latency.evaluate("s => [...s.querySelectorAll('text')].map(t => t.textContent.trim())")
    assert "Jour (heure de Paris)" in labels and "P95 (ms)" in labels and "objectif 500 ms" in labels
    assert "30/11" in labels    # the last day is always labelled
    # The lines are drawn with the stylesheet's colours (the CSP allows no inline style).
    phone_stroke = await latency.evaluate("s => getComputedStyle(s.querySelector('.series-phone path')).stroke")
    web_stroke = await latency.evaluate("s => getComputedStyle(s.querySelector('.series-web path')).stroke")
    assert phone_stroke != web_stroke and "none" not in (phone_stroke, web_stroke)
    # Tick labels stay readable once the chart is shrunk to the phone's width.
    tick_height = await latency.evaluate("s => s.querySelector('text.tick').getBoundingClientRect().height")
    assert tick_height >= 9

    # The table under a chart opens, and scrolls inside itself rather than widening the page.
    await page.locator("#kpi-users summary").click()
    total = await page.locator("#kpi-users tfoot td").all_inner_texts()
    assert [" ".join(cell.split()) for cell in total] == ["2 3 conversations", "2 3 conversations",
                                                         "4 6 conversations"]
    assert await page.evaluate(FITS)
    await screenshot(page, "review-dashboard-360.png")

    # The week view, from its tab.
    await page.get_by_role("link", name="Par semaine").click()
    await page.wait_for_url("**/tableau-de-bord?*view=weeks*")
    assert await page.locator("#chart-errors title").first.text_content() == "Taux d'erreur, par semaine"
    assert await page.locator(".views a[aria-current=page]").inner_text() == "Par semaine"
    assert await page.evaluate(FITS)
    await screenshot(page, "review-dashboard-weeks-360.png")
