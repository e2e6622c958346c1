"""The dashboard in a real browser: headless Chromium (Debian's /usr/bin/chromium) driven by
Playwright, against the app served by uvicorn on a free loopback port, on SQLite and
PostgreSQL. A screenshot of each page goes under the test's tmp_path.

Needs the Debian package `chromium` (`apt-get install chromium`) and the Python package
`playwright`; never `playwright install` (it downloads a browser). Without them the
test fails: it is not skipped.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from daemon.api.server import ApiServer
from daemon.api.testing import DEMO_PERSON, ApiWorld, api_world
from daemon.store import Store

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium", pytrace=False)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=ARGS, headless=True
        )
        yield launched
        launched.close()


class ServedInThread:
    """uvicorn (daemon.api.server.ApiServer) on its own event loop in a thread."""

    def __init__(self, world: ApiWorld) -> None:
        self.server = ApiServer(world.app, "127.0.0.1", 0)
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name="api-under-test", daemon=True)

    def _run(self) -> None:
        async def serve() -> None:
            await self.server.start()
            self.ready.set()
            while not self.stop.is_set():
                await asyncio.sleep(0.05)
            await self.server.stop()

        try:
            asyncio.run(serve())
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.errors.append(exc)
            self.ready.set()

    def __enter__(self) -> str:
        self.thread.start()
        assert self.ready.wait(10) and not self.errors, self.errors
        return f"http://127.0.0.1:{self.server.port}"

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join(15)
        assert not self.errors, self.errors


@pytest.fixture
def world(store: Store, master_key: bytes, tmp_path: Path) -> ApiWorld:
    return api_world(store, master_key, tmp_path)


def signed_in(browser: Browser, base: str, token: str, requests: list[str]) -> Page:
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.on("request", lambda request: requests.append(request.url))
    page.goto(f"{base}/dashboard")
    assert page.url == f"{base}/dashboard/login"  # not signed in: sent to the form
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/dashboard")
    return page


def test_the_dashboard_shows_customers_runs_and_erasures(
    browser: Browser, world: ApiWorld, tmp_path: Path
) -> None:
    requests: list[str] = []
    with ServedInThread(world) as base:
        page = signed_in(browser, base, world.tokens["aud"], requests)
        assert page.title() == "Overview · pdsync"
        customers = page.locator("#customers tbody tr")
        assert customers.count() == 2
        acme = page.locator('#customers tr[data-customer="acme"]')
        assert "failed" in acme.inner_text() and "3 open" in acme.inner_text()
        timeline = page.locator("#runs-timeline li.run")
        assert timeline.count() == 3
        assert page.locator("#runs-timeline li.s-failed").count() == 1
        assert page.locator("#erasures tbody tr").count() == 2  # the open ones
        assert "k***@f***.no" in page.locator("#erasures").inner_text()
        page.screenshot(path=tmp_path / "overview.png", full_page=True)
        pages = {"overview": page.content()}

        for name in ("runs", "casework", "erasures", "incidents"):
            page.goto(f"{base}/dashboard/{name}")
            page.screenshot(path=tmp_path / f"{name}.png", full_page=True)
            pages[name] = page.content()
        assert page.locator("#incidents tr.incident").count() == 1
        page.goto(f"{base}/dashboard/erasures")
        assert page.locator("#erasures tbody tr").count() == 3
        with page.expect_download() as download:
            page.click("#erasures a[href$='format=pdf']")
        assert download.value.suggested_filename.endswith(".pdf")
        certificate = tmp_path / "certificate.pdf"
        download.value.save_as(certificate)
        assert certificate.read_bytes().startswith(b"%PDF")

        # A customer's processing report, one click from the overview.
        page.goto(f"{base}/dashboard")
        page.click('#customers a[href="/dashboard/customers/acme"]')
        assert page.title() == "Processing report · acme · pdsync"
        systems = page.locator("#report-systems tbody tr")
        assert systems.count() == 2
        assert "Zisson AS" in page.locator('#report-systems tr[data-system="zisson"]').inner_text()
        assert "syncs" in page.locator("#report-activity").inner_text()
        page.screenshot(path=tmp_path / "report.png", full_page=True)
        pages["report"] = page.content()
        assert page.goto(f"{base}/dashboard/customers/nobody").status == 404

        # The browser holds a session id, never the token; signing out ends the session,
        # so a copy of the cookie taken before opens nothing after.
        (session,) = [c for c in page.context.cookies() if c["name"] == "pdsync_session"]
        assert session["httpOnly"] and session["sameSite"] == "Strict"
        assert world.tokens["aud"] not in str(page.context.cookies())
        page.click("text=Sign out")
        page.wait_for_url(f"{base}/dashboard/login")
        thief = browser.new_context()
        thief.add_cookies([session])
        stolen = thief.new_page()
        stolen.goto(f"{base}/dashboard")
        assert stolen.url == f"{base}/dashboard/login"
        thief.close()
    for name, html in pages.items():
        for value in DEMO_PERSON.values():
            assert value not in html, name
    assert all(url.startswith(base) for url in requests)  # nothing leaves loopback
    assert (tmp_path / "overview.png").stat().st_size > 10_000


NARROW = 400  # a phone held upright, or the dashboard in a side panel


def test_every_page_fits_a_400_px_screen_and_reads_as_sentences(
    browser: Browser, world: ApiWorld, tmp_path: Path
) -> None:
    """At 400 px nothing widens the page: the nav wraps inside the header, each table
    scrolls in its own box. Counts agree with their nouns; sentences keep their spaces."""
    requests: list[str] = []
    with ServedInThread(world) as base:
        page = signed_in(browser, base, world.tokens["aud"], requests)
        page.set_viewport_size({"width": NARROW, "height": 800})
        texts = {}
        for path in (
            "/dashboard",
            "/dashboard/runs",
            "/dashboard/casework",
            "/dashboard/erasures",
            "/dashboard/incidents",
            "/dashboard/customers/acme",
        ):
            page.goto(base + path)
            page.screenshot(path=tmp_path / f"narrow{path.replace('/', '_')}.png", full_page=True)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= NARROW, f"{path} is {width} px wide"
            for link in page.locator("header nav a").all():
                box = link.bounding_box()
                assert box is not None and box["x"] + box["width"] <= NARROW, (path, box)
            for table in page.locator("main table").all():
                frame = table.locator("xpath=..").bounding_box()
                assert frame is not None and frame["x"] + frame["width"] <= NARROW, path
            texts[path] = page.locator("main").inner_text()
    report = " ".join(texts["/dashboard/customers/acme"].split())
    assert re.search(r"Processed since [\d: -]+\. Counts and rules only", report), report
    for text in texts.values():
        assert not re.search(r"\b1 (syncs|records|retention runs|customers|incidents)\b", text)
    overview = " ".join(texts["/dashboard"].split())
    assert re.search(r"\b2 customers\b", overview), overview
