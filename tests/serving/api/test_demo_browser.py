"""The demo store front in a real headless Chromium (Debian's, driven by Playwright),
served by uvicorn against the test redis-server holding a published version."""
from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import uvicorn

from serving.api.app import create_app
from serving.api.impressions import stream_entries
from serving.client import LookupClient
from tests.serving.api.conftest import DEMO
from tests.serving.api.store import CATALOGUE, FALLBACKS, SIMILAR, USER_LISTS, VERSION, publish_store

TIMEOUT_MS = 5_000


def chromium_path() -> str:
    """Debian's chromium: Playwright drives it; we never download Playwright's own browsers."""
    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if path is None:
        pytest.fail("chromium is not installed, so the demo page cannot be tested in a browser: "
                    "run `make browser` (installs Debian's chromium package)", pytrace=False)
    return path


def titles_of(ids):
    return [CATALOGUE[i]["title"] for i in ids]


@pytest.fixture
def server(r, ks) -> Iterator[str]:
    """uvicorn in a thread on a free port; yields the base url."""
    publish_store(r, ks)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(LookupClient(r, ks), demo=DEMO), host="127.0.0.1", port=port,
                                        log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=5)


@pytest.fixture
def page(server) -> Iterator:
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        # JS errors, requests leaving the server and HTTP errors: all must be none or expected
        problems = []
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.on("console", lambda msg: msg.type == "error" and not msg.text.startswith("Failed to load resource")
                and problems.append(f"console: {msg.text}"))  # failed loads: see the response check
        page.on("request", lambda req: req.url.startswith(server) or problems.append(f"external: {req.url}"))
        page.on("response", lambda res: res.status < 400 or problems.append(f"{res.status}: {res.url}"))
        try:
            yield page, problems
        finally:
            browser.close()


def _polled(read, timeout_s: float = 5.0):
    """``read()`` once it is not empty (the page's event and the impressions are written asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while not (got := read()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return got


def test_store_front_shows_recommendations_and_similar_items(server, page, tmp_path, r):
    from playwright.sync_api import expect

    page, problems = page
    page.goto(server + "/")
    expect(page).to_have_title("RetailReco demo store")

    # a known customer: their own list, in rank order, with prices and tags
    page.fill("#customer-id", "u1")
    page.click("#show")
    cards = page.locator("#recs .card")
    items, _, tags = USER_LISTS["u1"]
    expect(cards.locator(".title")).to_have_text(titles_of(items))
    expect(cards.locator(".rank")).to_have_text([f"#{n}" for n in range(1, len(items) + 1)])
    expect(cards.locator(".tag")).to_have_text(tags)
    expect(cards.first.locator(".price")).to_have_text(f"{CATALOGUE[items[0]]['price']:.2f}")
    expect(page.locator("#source")).to_have_text("personal")
    expect(page.locator("#version")).to_have_text(f"version {VERSION}")

    # clicking a product shows its similar items, and reports the click with the list's request id
    cards.first.click()
    expect(page.locator("#similar-label")).to_have_text(CATALOGUE[items[0]]["title"])
    [click] = _polled(lambda: stream_entries(r.xrange("reco:stream:feedback")))
    [shown] = _polled(lambda: [e for e in stream_entries(r.xrange("reco:stream:impressions"))
                               if e["route"] == "recommendations"])
    assert {k: click[k] for k in ("type", "user_id", "item_id", "request_id")} == {
        "type": "click", "user_id": "u1", "item_id": items[0], "request_id": shown["request_id"]}
    expect(page.locator("#similar .card .title")).to_have_text(titles_of(SIMILAR[items[0]][0]))
    page.screenshot(path=str(tmp_path / "demo-store.png"), full_page=True)

    # an unknown customer in a segment: the segment's list, labelled as a fallback
    page.fill("#customer-id", "nobody")
    page.fill("#segment", "Germany")
    page.click("#show")
    expect(page.locator("#source")).to_have_text("fallback: segment:Germany")
    expect(page.locator("#recs .card .title")).to_have_text(titles_of(FALLBACKS["segment:Germany"][0]))
    expect(page.locator("#similar-section")).to_be_hidden()

    # an item with no similar list: the API's 404 message is shown, nothing breaks
    page.locator("#recs .card").last.click()
    expect(page.locator("#error")).to_contain_text("unknown item 'C'")

    # the random button picks a customer of the published version
    page.fill("#segment", "")
    page.click("#random")
    expect(page.locator("#source")).to_have_text("personal")
    assert page.input_value("#customer-id") in USER_LISTS
    expect(page.locator("#error")).to_be_hidden()

    assert (tmp_path / "demo-store.png").stat().st_size > 10_000
    assert problems == [f"404: {server}/v1/items/C/similar?k=8"]
